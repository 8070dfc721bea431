"""Soak: the text example's server at its defaults; saturation req/s at 8 connections, then ~70% of that rate,
paced, over 8 connections for SECONDS, RSS sampled every 10 s; start/end/max RSS and growth (target < 5%)."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from bench.serving.examples import example_artifact, example_rows
from bench.serving.forms import RequestForm
from bench.serving.measure import Percentiles, Settings, paced_load
from bench.serving.servers import Server

CONNECTIONS = 8
LOAD_FRACTION = 0.7
GROWTH_TARGET_PCT = 5
RSS_TARGET_MB = 300


def soak(seconds: float, form: RequestForm, run: Settings) -> None:
    model_dir = example_artifact("text")
    model = json.loads((model_dir / "report.json").read_text())["name"]
    input_name, x = example_rows(model_dir, 1)
    request = form.encode(model, {input_name: x})
    samples: list[tuple[float, float]] = []
    result: dict[str, Any] = {}
    with Server(model_dir, run.root / "soak.log", **run.ours, **form.server_env) as server:
        port = form.port(server)
        assert port, f"our server has no port for {form.name}"
        form.load(port, request, CONNECTIONS, 2)  # warm-up
        saturation = form.load(port, request, CONNECTIONS, 10).rps
        rate = LOAD_FRACTION * saturation
        print(
            f"\n## soak (text, {form.title}, server defaults, {CONNECTIONS} connections): saturation "
            f"{saturation:.1f} req/s, driving {rate:.1f} req/s ({LOAD_FRACTION:.0%}) for {seconds:g} s",
            flush=True,
        )

        def drive() -> None:
            try:
                result["rate"], result["lat"] = paced_load(form, port, request, CONNECTIONS, seconds, rate)
            except Exception as e:  # reported below
                result["error"] = e

        driver = threading.Thread(target=drive)
        t0 = time.monotonic()
        driver.start()
        for i in range(int(seconds // 10) + 2):  # bounded: one sample per 10 s for the soak's length
            samples.append((time.monotonic() - t0, server.rss_mb()))
            print(
                f"  t={samples[-1][0]:6.1f} s  RSS {samples[-1][1]:6.1f} MB  load avg {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            driver.join(timeout=max(0.0, t0 + 10 * (i + 1) - time.monotonic()))
            if not driver.is_alive():
                break
        driver.join(timeout=seconds + 120)
        samples.append((time.monotonic() - t0, server.rss_mb()))
    if "error" in result:
        raise RuntimeError(f"soak load failed: {result['error']}")
    start, end = samples[0][1], samples[-1][1]
    top = max(rss for _, rss in samples)
    growth = (end - start) / start * 100
    lat = Percentiles.of(result["lat"])
    print(
        f"achieved {result['rate']:.1f} req/s, {len(result['lat'])} requests, all 200; "
        f"p50 {lat.p50:.2f} ms  p99 {lat.p99:.2f} ms"
    )
    print(
        f"RSS start {start:.1f} MB  end {end:.1f} MB  max {top:.1f} MB  growth {growth:+.2f}%  "
        f"(target < {GROWTH_TARGET_PCT}%: {'met' if growth < GROWTH_TARGET_PCT else 'MISSED'}; "
        f"< {RSS_TARGET_MB} MB: {'met' if top < RSS_TARGET_MB else 'MISSED'})"
    )
