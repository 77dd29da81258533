"""``fhir-bridge export``: run Bulk Data export jobs now, and the worker's export thread."""

from __future__ import annotations

import threading

import click

from fhir_bridge.services.runtime import Runtime


def start_export_runner(rt: Runtime, stop: threading.Event) -> threading.Thread:
    """Run export jobs in a thread of the worker process until ``stop`` is set."""
    from fhir_bridge.services.bulk_runner import ExportRunner

    runner = ExportRunner(rt)

    def run() -> None:
        try:
            runner.run_forever(stop)
        finally:
            runner.close()

    thread = threading.Thread(target=run, name="export-runner", daemon=True)
    thread.start()
    return thread


@click.group("export")
def export() -> None:
    """Bulk Data $export jobs (the worker runs them; these commands run them now)."""


@click.command("run-once")
def run_once() -> None:
    """Run every queued (or abandoned) export job, then exit."""
    from fhir_bridge.cli import _runtime
    from fhir_bridge.services.bulk_runner import ExportRunner

    rt = _runtime()
    try:
        runner = ExportRunner(rt)
        done = 0
        while runner.run_once():
            done += 1
        runner.close()
        click.echo(f"{done} export jobs run")
    finally:
        rt.dispose()


export.add_command(run_once)
