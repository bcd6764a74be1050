// The official Durable Streams conformance suite against the server at DS_URL (make conformance).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({ baseUrl: process.env.DS_URL })
