"""Online: the HTTP app (JSON API and Open Inference Protocol REST), the gRPC server, and what
they share: the V2 codec, the OpenAPI document, middleware, batching and process tuning."""
