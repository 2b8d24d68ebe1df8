"""Image pull throughput: shoal's registry client against skopeo, from the same local registry.

    .venv/bin/python bench/image_pull_bench.py [--runs 5] [--layers 6] [--layer-mb 4]

Builds a busybox image with umoci plus ``--layers`` layers of ``--layer-mb`` MiB of random
(incompressible) data each, pushes it to a docker-registry on 127.0.0.1, then alternates
``--runs`` fresh pulls with shoal (``ImageService.pull`` into a new, empty store each time:
download, verify, and unpack every layer) and ``skopeo copy docker://... oci:DIR:tag`` (a new
directory each time: download and verify, no unpacking). Prints the p50 of each, the MB/s
(compressed bytes moved) and the ratio shoal/skopeo. Needs root and umoci, skopeo,
docker-registry and busybox-static (``make system``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, pct

sys.path.insert(0, str(REPO))
from tests.oci_support import build_busybox_image, push, registry

from shoal.runtime.images import ImageService, PullProgress


async def _shoal_pull(store: Path, ref: str) -> tuple[float, float, int]:
    """(whole pull, until the last layer was downloaded, compressed bytes)."""
    svc = ImageService(store)
    downloaded = 0.0

    def progress(event: PullProgress) -> None:
        nonlocal downloaded
        if event.kind == "layer" and event.done:
            downloaded = time.perf_counter() - start

    try:
        start = time.perf_counter()
        record = await svc.pull(ref, progress=progress)
        return time.perf_counter() - start, downloaded, record.size
    finally:
        await svc.aclose()


def _skopeo_pull(dest: Path, ref: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{ref}", f"oci:{dest}:bench"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--layer-mb", type=float, default=4)
    args = ap.parse_args()
    missing = [t for t in ("umoci", "skopeo", "docker-registry", "busybox") if not shutil.which(t)]
    if missing:
        sys.exit(f"image_pull_bench needs {', '.join(missing)} (make system)")
    with tempfile.TemporaryDirectory(prefix="shoal-pull-bench-") as tmp:
        work = Path(tmp)
        layout = build_busybox_image(
            work / "build", layers=args.layers + 1, tag="bench",
            layer_bytes=int(args.layer_mb * (1 << 20)),
        )  # fmt: skip
        with registry(work / "registry") as reg:
            ref = f"{reg.host}/bench/pull:bench"
            push(layout, ref)
            shoal_times: list[float] = []
            download_times: list[float] = []
            skopeo_times: list[float] = []
            size = 0
            for run in range(args.runs):
                elapsed, downloaded, size = asyncio.run(_shoal_pull(work / f"store-{run}", ref))
                shoal_times.append(elapsed)
                download_times.append(downloaded)
                skopeo_times.append(_skopeo_pull(work / f"skopeo-{run}", ref))
                shutil.rmtree(work / f"store-{run}")
                shutil.rmtree(work / f"skopeo-{run}")
    mb = size / 1e6
    shoal_p50, skopeo_p50 = pct(shoal_times, 50), pct(skopeo_times, 50)
    print(f"image: {args.layers + 1} layers ({args.layers} x {args.layer_mb:g} MiB random + "
          f"busybox), {mb:.1f} MB compressed; {args.runs} fresh pulls each from a local registry")  # fmt: skip
    print(f"  shoal pull  (download + verify + unpack): p50 {shoal_p50 * 1000:.0f} ms, "
          f"{mb / shoal_p50:.0f} MB/s")  # fmt: skip
    print(
        f"    of which until the last layer was on disk: p50 {pct(download_times, 50) * 1000:.0f} ms"
    )
    print(f"  skopeo copy (download + verify)         : p50 {skopeo_p50 * 1000:.0f} ms, "
          f"{mb / skopeo_p50:.0f} MB/s")  # fmt: skip
    print(f"  shoal/skopeo time ratio: {shoal_p50 / skopeo_p50:.2f}")


if __name__ == "__main__":
    main()
