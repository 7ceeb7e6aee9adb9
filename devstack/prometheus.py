"""`make run`'s Prometheus: Debian's `prometheus` binary, when installed, scraping the three
services with the alerting rules of `deploy/prometheus/alerts.yml` loaded. Its data stays in
the stack's folder with the rest, so graphs survive a restart.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from devstack import servers

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "5s"
RETENTION = "7d"
# Where the Alerts page is: the React UI's (upstream 2.x, 3.x), else the classic UI's (Debian's
# 2.x package ships only the classic one, and answers 404 to the first).
ALERTS_PAGES = ("/alerts", "/classic/alerts")


def binary() -> str | None:
    return shutil.which("prometheus")


def configuration(targets: Mapping[str, str], rules: Path = RULES) -> dict[str, object]:
    """One scrape job per service (`payments-<name>`, the job names the docs use), `targets`
    mapping each name to the host:port that serves its /metrics."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": f"payments-{name}", "static_configs": [{"targets": [address]}]}
            for name, address in targets.items()
        ],
    }


def prometheus(
    port: int, targets: Mapping[str, str], folder: Path, logs: Path
) -> servers.ChildProcess | None:
    """The Prometheus child process, or None when the binary is not installed."""
    executable = binary()
    if executable is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(json.dumps(configuration(targets), indent=2) + "\n")
    command = [
        executable,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return servers.ChildProcess("prometheus", command, port, logs / "prometheus.log")


async def alerts_page(base_url: str) -> str:
    """The Alerts page of the Prometheus listening at `base_url`: the first of ALERTS_PAGES it
    serves (before it is ready it may answer 503, but never 404 to a page it has), else its
    home page."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for path in ALERTS_PAGES:
            try:
                async with http.get(base_url + path, allow_redirects=False) as response:
                    if response.status != 404:
                        return base_url + path
            except (aiohttp.ClientError, TimeoutError):
                break
    return base_url + "/"
