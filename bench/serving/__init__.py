"""Serving benchmark: prints figures and ratios measured side by side in one run (not a test).

    .venv/bin/python bench/serving_bench.py [--seconds 2] [--rounds 6] [--requests 2000] [--workers W] [--threads N]
        [--mlserver PATH]
    .venv/bin/python bench/serving_bench.py --example digits|text [--mlserver PATH]
    .venv/bin/python bench/serving_bench.py --soak SECONDS
    (``python -m bench.serving ...`` from the repository root is the same)

1. Overhead (overhead.py): a round trip to our server (batch 1, concurrency 1, one keep-alive connection)
   beside in-process ``session.run`` of the same model with the same thread count, and beside a bare
   uvicorn app (the client + HTTP stack floor): p50 and p99 of each. Targets: p50 overhead (difference of
   medians) <= 0.5 ms; server p99 <= session.run p99 + 2 ms.
2. Dynamic batching (batching.py): requests/s at 8 concurrent connections on a compute-bound model, server
   with max_batch_size=8 (no delay, and 2 ms) vs the same server with batching off (max_batch_size=1), beside
   what ORT alone saves at batch 8. Target: >= 1.6x. Server RSS after the load (target < 300 MB).
3. With ``--mlserver PATH`` (mlserver.py; the ``mlserver`` executable of its own virtualenv, with onnxruntime
   installed there too): MLServer serving the same ONNX files through a minimal custom runtime, same
   threads, same clients: latency at batch 1 and req/s at 8 connections with its adaptive batching
   (8 rows, 2 ms).
Our server runs at its defaults unless ``--workers``/``--threads`` say otherwise: one compute worker per CPU,
each run single-threaded; in-process ``session.run`` uses the same threads per run, and MLServer (one run at a
time in its process) as many threads as our workers have together.
Each engine runs in its own process; only one is measured at a time (idle ones cost no CPU), warm-up first.
Every req/s window is driven by wrk (one event-loop thread, 8 keep-alive connections; needs Debian's ``wrk``)
so the load generator takes little of the CPU the servers share; latency at concurrency 1 uses http.client.
Each comparison runs once per request form (forms.py, ``--form``; JSON REST so far).

With ``--example digits|text`` (examples.py) the same parts run on that example's optimized artifact instead
of the MLPs (``python -m optimize build --recipe int8-dynamic``, built once into ``.cache/serving-bench/``;
the request is one real row of the example's validation set, its dtype and shape from report.json "inputs"):
overhead at batch 1, req/s at 8 connections vs MLServer (targets: digits >= 2x, text >= 1.5x, against
MLServer's better configuration, adaptive batching on or off), and, on the text example, batching on vs off
at 8 connections (target >= 1.6x) with the p99 check: batched p99 <= unbatched p99 + max_queue_delay + one
batch's compute time (in-process ``session.run`` p50 at max_batch_size rows), plus server RSS (< 300 MB).

``--soak SECONDS`` (soak.py, alone): the text example's server at its defaults; saturation req/s at 8
connections, then ~70% of that rate, paced, over 8 connections for SECONDS, RSS sampled every 10 s; prints
start/end/max RSS and growth (target < 5%).
"""
