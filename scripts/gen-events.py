#!/usr/bin/env python3
"""Writes events/*.json: sample API Gateway HTTP API (payload 2.0) requests, one or more per
function. tests/tests/api.rs runs each through its function's handler and knows the status it
must answer; the ids below are the ones that test stores first.

Protected routes authenticate inside the function, so their events carry an Authorization
header with a placeholder token: as they are, they get 401. To invoke one for real
(`cargo lambda invoke`, `sam local invoke`), put a token from POST /api/v1/users/login there.

    scripts/gen-events.py
"""

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
USER_ID = "0192f0c4-6a8e-7b3c-9d2e-1f4a5b6c7d8e"
PRODUCT_ID = "0192f0c4-7000-7abc-8def-0123456789ab"
ORDER_ID = "0192f0c4-8000-7abc-8def-0123456789ab"
CANCEL_ORDER_ID = "0192f0c4-8001-7abc-8def-0123456789ab"
SAMPLE_REFRESH_TOKEN = "7a0c2d4e-1b3f-4c5d-8e6f-0a1b2c3d4e5f.REPLACE-WITH-refreshToken-FROM-users-loginx"
TOKEN_HEADER = {"authorization": "Bearer REPLACE-WITH-A-TOKEN-FROM-POST-api-v1-users-login"}


def event(method, path, route_path, body=None, headers=None, path_params=None, query=None):
    h = {"accept": "application/json", "host": "api.zhixuan.local", "user-agent": "curl/8.4.0",
         "x-forwarded-for": "203.0.113.10", "x-forwarded-port": "443", "x-forwarded-proto": "https"}
    if body is not None:
        h["content-type"] = "application/json"
        h["content-length"] = str(len(body.encode()))
    h.update(headers or {})
    ctx = {"accountId": "123456789012", "apiId": "a1b2c3d4e5", "domainName": "api.zhixuan.local",
           "domainPrefix": "api", "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
           "sourceIp": "203.0.113.10", "userAgent": "curl/8.4.0"}, "requestId": "JKJaXmPLvHcESHA=",
           "routeKey": f"{method} {route_path}", "stage": "$default", "time": "24/Nov/2026:08:00:00 +0000",
           "timeEpoch": 1795420800000}
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    e = {"version": "2.0", "routeKey": f"{method} {route_path}", "rawPath": path, "rawQueryString": raw_query,
         "headers": h, "requestContext": ctx, "isBase64Encoded": False}
    if query:
        e["queryStringParameters"] = query
    if path_params:
        e["pathParameters"] = path_params
    if body is not None:
        e["body"] = body
    return e


def routes():
    """Every HTTP function's routes, from the code's declarations (`zx-admin routes`): a route is
    written once, in its handler's `#[utoipa::path]`."""
    out = subprocess.run(["cargo", "run", "-q", "-p", "zx-app", "--bin", "zx-admin", "--", "routes"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


ROUTES = routes()


def http(function, path=None, route=0, **kw):
    """An event of `function`'s route (its first, or the one at `route`), at `path` (the
    route's own when it has no parameters)."""
    method, route_path = ROUTES[function][route]
    return event(method, path or route_path, route_path, **kw)


EVENTS = {
    "health": http("health"),
    "openapi": http("openapi"),
    "docs": http("docs"),
    "docs.asset": http("docs", "/docs/init.js", route=1, path_params={"file": "init.js"}),
    "users-register": http("users-register",
        body=json.dumps({"username": "new_user", "email": "New.User@Example.com", "password": "correct horse 1"})),
    "users-register.invalid": http("users-register",
        body=json.dumps({"username": "x", "email": "not-an-email", "password": "p" * 73})),
    "users-login": http("users-login",
        body=json.dumps({"email": "li.wei@example.com", "password": "correct horse 1"})),
    # A refresh token of the right form that names no session: 401 as it is; put the
    # refreshToken of a login there to refresh (or end) that session.
    "users-refresh": http("users-refresh",
        body=json.dumps({"refreshToken": SAMPLE_REFRESH_TOKEN})),
    "users-logout": http("users-logout",
        body=json.dumps({"refreshToken": SAMPLE_REFRESH_TOKEN})),
    "users-validate": http("users-validate",
        headers=TOKEN_HEADER),
    "users-me": http("users-me", headers=TOKEN_HEADER),
    "users-get": http("users-get", f"/api/v1/users/{USER_ID}",
        path_params={"id": USER_ID}, headers=TOKEN_HEADER),
    "users-update": http("users-update", f"/api/v1/users/{USER_ID}",
        path_params={"id": USER_ID}, body=json.dumps({"username": "li_wei_2"}), headers=TOKEN_HEADER),
    "products-list": http("products-list",
        query={"category": "phones", "minPrice": "100", "maxPrice": "500000", "search": "phone", "limit": "10"}),
    "products-get": http("products-get", f"/api/v1/products/{PRODUCT_ID}",
        path_params={"id": PRODUCT_ID}),
    "products-create": http("products-create", headers=TOKEN_HEADER,
        body=json.dumps({"name": "Phone Lite", "description": "A budget phone", "price": 99900, "stock": 25,
                         "categoryId": "phones", "images": ["https://img.zhixuan.local/phone-lite.jpg"]})),
    "products-create.customer": http("products-create",
        headers=TOKEN_HEADER, body=json.dumps({"name": "Nope", "price": 1, "stock": 1, "categoryId": "x"})),
    "products-update": http("products-update", f"/api/v1/products/{PRODUCT_ID}",
        path_params={"id": PRODUCT_ID}, headers=TOKEN_HEADER, body=json.dumps({"price": 379900})),
    "products-delete": http("products-delete", f"/api/v1/products/{PRODUCT_ID}",
        path_params={"id": PRODUCT_ID}, headers=TOKEN_HEADER),
    "categories-list": http("categories-list"),
    "stock-get": http("stock-get", f"/api/v1/stock/{PRODUCT_ID}",
        path_params={"productId": PRODUCT_ID}, query={"quantity": "3"}),
    "stock-put": http("stock-put", f"/api/v1/stock/{PRODUCT_ID}",
        path_params={"productId": PRODUCT_ID}, headers=TOKEN_HEADER, body=json.dumps({"delta": 5})),
    "orders-create": http("orders-create",
        headers={**TOKEN_HEADER, "idempotency-key": "checkout-2026-11-24-0001"},
        body=json.dumps({"items": [{"productId": PRODUCT_ID, "quantity": 2}],
                         "shippingAddress": "No. 1 Zhongguancun Street, Haidian, Beijing"})),
    "orders-get": http("orders-get", f"/api/v1/orders/{ORDER_ID}",
        path_params={"id": ORDER_ID}, headers=TOKEN_HEADER),
    "orders-list": http("orders-list", headers=TOKEN_HEADER,
        query={"limit": "10"}),
    "orders-cancel": http("orders-cancel", f"/api/v1/orders/{CANCEL_ORDER_ID}/cancel",
        path_params={"id": CANCEL_ORDER_ID}, headers=TOKEN_HEADER),
    "orders-update-status": http("orders-update-status", f"/api/v1/orders/{ORDER_ID}/status",
        path_params={"id": ORDER_ID}, headers=TOKEN_HEADER, body=json.dumps({"status": "paid"})),
}


def envelope(kind, data):
    return json.dumps({"id": "0192f0c4-9000-7abc-8def-0123456789ab", "type": kind, "version": 1,
                       "occurredAt": "2026-11-24T08:00:00.000Z", "data": data})


def sqs_event(queue, body):
    """An SQS event as a Lambda event source mapping delivers it (one record)."""
    return {"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795420800000",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1795420800001"},
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
        "awsRegion": "us-east-1"}]}


# Non-HTTP functions: the SQS workers and the scheduled relay (tests/tests/orders.rs runs them).
WORKER_EVENTS = {
    "inventory-worker": sqs_event("zhixuan-inventory", envelope("inventory.reserve",
        {"orderId": ORDER_ID, "items": [{"productId": PRODUCT_ID, "quantity": 1}]})),
    "order-worker": sqs_event("zhixuan-orders", envelope("inventory.reserved", {"orderId": ORDER_ID})),
    "outbox-relay": {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": "2026-11-24T08:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/zhixuan-outbox-relay"], "detail": {}},
}
EVENTS.update(WORKER_EVENTS)

for name, e in EVENTS.items():
    (ROOT / "events" / f"{name}.json").write_text(json.dumps(e, indent=2, ensure_ascii=False) + "\n")

