"""An OpenAI-compatible backend that answers every chat request after a fixed delay: the
stand-in for a model server when measuring what a router in front of it adds."""

import argparse
import asyncio
import json

import uvicorn

BODY = json.dumps({
    "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
}).encode()  # fmt: skip
MODELS = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()


def make_app(delay_s: float):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "POST":
            await asyncio.sleep(delay_s)
            body = BODY
        else:
            body = MODELS
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50)
    args = parser.parse_args()
    uvicorn.run(make_app(args.delay_ms / 1000), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)  # fmt: skip
