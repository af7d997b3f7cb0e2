"""gRPC unary load for bench/h2.sh (issue 17), with grpcio (asyncio API).

    grpc_load.py server PORT
        a grpcio server on 127.0.0.1:PORT whose generic handler
        /bench.Echo/Unary answers with the request's bytes; runs until killed.
    grpc_load.py client HOST:PORT SECONDS [--concurrency N] [--channels N]
                        [--token JWT] [--size BYTES]
        N calls in flight (spread over the channels, each one HTTP/2
        connection) for SECONDS, each with metadata `authorization: Bearer
        JWT` when given; prints one line in the format of bench/wrk/summary.lua:
        RESULT requests=… duration_us=… non2xx=… errors=… p50=… p99=… p999=…
        (non2xx: calls that ended with a gRPC status other than OK; errors:
        the same count, split out for run.sh's format; latencies in µs).
"""
import argparse
import asyncio
import sys
import time

import grpc

METHOD = "/bench.Echo/Unary"


async def serve(port: int) -> None:
    async def unary(request: bytes, context) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def pct(sorted_us: list[int], p: float) -> int:
    if not sorted_us:
        return 0
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * p / 100))]


async def load(args) -> None:
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    payload = b"x" * args.size
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.channels)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), timeout=10)
    calls = [ch.unary_unary(METHOD) for ch in channels]
    latencies: list[int] = []
    failed: dict[str, int] = {}
    start = time.perf_counter()
    deadline = start + args.seconds

    async def worker(i: int) -> None:
        call = calls[i % len(calls)]
        record = latencies.append
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            try:
                reply = await call(payload, metadata=metadata, timeout=10)
                if reply != payload:
                    failed["wrong reply"] = failed.get("wrong reply", 0) + 1
                    continue
            except grpc.aio.AioRpcError as e:
                key = f"{e.code().name}: {e.details()}"
                failed[key] = failed.get(key, 0) + 1
                continue
            record((time.perf_counter_ns() - t0) // 1000)

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    n_failed = sum(failed.values())
    lat = sorted(latencies)
    for k, v in failed.items():
        print(f"failed {v}: {k}", file=sys.stderr)
    print(
        f"RESULT requests={len(lat) + n_failed} duration_us={int(elapsed * 1e6)} non2xx={n_failed} "
        f"errors=0 p50={pct(lat, 50)} p99={pct(lat, 99)} p999={pct(lat, 99.9)}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    c = sub.add_parser("client")
    c.add_argument("target")
    c.add_argument("seconds", type=float)
    c.add_argument("--concurrency", type=int, default=32)
    c.add_argument("--channels", type=int, default=1)
    c.add_argument("--token", default="")
    c.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    asyncio.run(serve(args.port) if args.cmd == "server" else load(args))


if __name__ == "__main__":
    main()
