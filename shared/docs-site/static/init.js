// Renders the API description this deployment serves. Nothing is fetched from elsewhere:
// no validator badge, no CDN.
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  docExpansion: "list",
  deepLinking: true,
  displayOperationId: false,
  defaultModelsExpandDepth: 0,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
