// No-op Java agent. LocalStack always starts DynamoDB Local with
// -javaagent:ddb-local-loader-0.1.jar; its real agent (downloaded from GitHub,
// which these machines cannot reach) only lifts the 20-GSI limit. See docs/local-stack.md.
package zhixuan;

import java.lang.instrument.Instrumentation;

public final class NoopAgent {
    private NoopAgent() {}

    public static void premain(String args, Instrumentation inst) {}

    public static void premain(String args) {}
}
