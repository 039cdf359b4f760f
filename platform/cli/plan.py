"""`gemma-fleet plan`: the cheapest replicas and nodes for a demand, explained; Helm values for it;
cost and capacity by hour for a trace.

Exit status: 0 when the plan meets demand, 1 when it cannot (the best-effort plan and what is
missing are printed), 2 for bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from gemma_fleet.autoscaler.capacity import (
    CapacityModel,
    ProfileFileError,
    SimulationSettings,
    default_cache_path,
    load_profiles,
)
from gemma_fleet.autoscaler.demand_file import (
    DemandFile,
    InputFileError,
    TraceFile,
    load_demand,
    load_trace,
)
from gemma_fleet.autoscaler.planner import PlanOutcome, plan_fleet
from gemma_fleet.catalog import load_catalog
from gemma_fleet.cli.console import new_console
from gemma_fleet.cli.errors import CliError
from gemma_fleet.deployments.pools.load import FleetError, load_fleet
from gemma_fleet.deployments.pools.schema import EngineKind, FleetSpec


def plan_command(
    demand: Annotated[
        Path | None, typer.Option("--demand", "-d", help="demand file (YAML)")
    ] = None,
    fleet: Annotated[
        str,
        typer.Option(
            "--fleet", "-f", help="fleet file, shipped fleet name, or Helm values (their fleet:)"
        ),
    ] = "default",
    profiles: Annotated[
        Path | None,
        typer.Option("--profiles", help="measured capacity profiles (YAML); else the simulator"),
    ] = None,
    values_out: Annotated[
        Path | None, typer.Option("--values-out", help="write Helm values (fleet:) for the plan")
    ] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="trace file: demand per hour (YAML)")
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="with --trace: draw cost and capacity by hour")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="capacity cache file [default: ~/.cache/gemma-fleet/...]"),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="simulate afresh")] = False,
    requests: Annotated[
        int,
        typer.Option("--sim-requests", help="requests simulated per rate tried (precision)"),
    ] = SimulationSettings().requests,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Plan replicas per model pool and nodes per node pool at least cost for a demand."""
    if demand is None and trace is None:
        raise CliError("give a demand file (--demand) or a trace (--trace), or both")
    if png is not None and trace is None:
        raise CliError("--png draws a trace: give --trace too")
    if values_out is not None and demand is None:
        raise CliError("--values-out writes the plan for a demand file: give --demand")
    if requests < 20:
        raise CliError(f"--sim-requests must be at least 20, got {requests}")
    try:
        spec = load_fleet(fleet)
        demand_file = load_demand(demand) if demand is not None else None
        trace_file = load_trace(trace) if trace is not None else None
        measured = load_profiles(profiles) if profiles is not None else None
    except (FleetError, InputFileError, ProfileFileError) as exc:
        raise CliError(_one_line(exc)) from exc
    known = load_catalog().models
    for source, names in (
        (demand, demand_file.models if demand_file else {}),
        (trace, trace_file.models if trace_file else {}),
    ):
        for name in names:
            if name not in known:
                raise CliError(f"{source}: unknown model {name!r}; known: {', '.join(known)}")
    model = CapacityModel(
        profiles=measured,
        profile_source=f"profile {profiles}" if profiles else "profile",
        settings=SimulationSettings(requests=requests),
        cache_path=None if no_cache else (cache or default_cache_path()),
    )
    console = new_console()
    status = 0
    if demand_file is not None:
        outcome = plan_fleet(
            spec,
            demand_file.demand(),
            demand_file.slos(),
            model,
            headroom=demand_file.headroom,
            on_demand_fraction=demand_file.on_demand_fraction,
        )
        if as_json:
            print(json.dumps(_as_json(outcome), indent=2))
        else:
            _print_plan(console, outcome, spec)
        if values_out is not None:
            _write_values(values_out, spec, outcome)
            if not as_json:
                console.print(f"Helm values written to {values_out}")
            _warn_simulator_pools(spec)
        status = 0 if outcome.plan.feasible else 1
    if trace_file is not None:
        hours = _plan_trace(spec, trace_file, model)
        if not as_json:
            _print_trace(console, hours)
        if png is not None:
            _draw(png, trace_file, hours)
            if not as_json:
                console.print(f"Chart written to {png}")
        if any(not h[1].plan.feasible for h in hours):
            status = 1
    if status:
        raise typer.Exit(status)  # scripts must see that demand is not met


def _one_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return lines[0] if len(lines) == 1 else f"{lines[0]} {'; '.join(s.strip() for s in lines[1:])}"


# ---- output --------------------------------------------------------------------------------


def _print_plan(console: Console, outcome: PlanOutcome, fleet: FleetSpec) -> None:
    plan = outcome.plan
    verdict = "[green]meets demand[/green]" if plan.feasible else "[red]CANNOT meet demand[/red]"
    table = Table(title=f"Plan: {plan.cost_per_hour:.2f} per hour, {verdict}", box=SIMPLE_HEAD)
    # Short headers, no vertical rules, the model left to the per-model table: the pool table
    # must fit an 80-column terminal without cutting names.
    for col in (
        "model pool",
        "nodes",
        "tp",
        "replicas",
        "req/s each",
        "cost/h",
        "cost/h per req/s",
    ):
        left = col in ("model pool", "nodes")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for row in outcome.pools:
        per_rps = "-" if row.capacity_rps <= 0 else f"{row.cost_per_rps_hour:.3f}"
        cap = f"{row.capacity_rps:.2f}" if row.capacity_rps > 0 else f"[red]0[/red] {row.note}"
        table.add_row(
            row.pool,
            row.node_pool,
            str(row.tp),
            str(row.replicas),
            cap,
            f"{row.cost_per_hour:.2f}",
            per_rps,
        )
    console.print(table)
    models = Table(title="Per model", box=SIMPLE_HEAD)
    for col in ("model", "demand req/s", "need req/s", "planned req/s", "cost/h"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in outcome.models:
        short = m.capacity_rps + 1e-9 < m.need_rps
        planned = f"[red]{m.capacity_rps:.1f}[/red]" if short else f"{m.capacity_rps:.1f}"
        models.add_row(
            m.model, f"{m.demand_rps:.1f}", f"{m.need_rps:.1f}", planned, f"{m.cost_per_hour:.2f}"
        )
    console.print(models)
    nodes = Table(title="Node pools", box=SIMPLE_HEAD)
    for col in ("node pool", "gpu", "nodes", "max", "GPUs used", "cost/h", "layout"):
        nodes.add_column(col)
    for n in outcome.nodes:
        spec = fleet.node_pool(n.node_pool)
        nodes.add_row(
            n.node_pool,
            spec.gpu,
            str(n.nodes),
            str(spec.max_nodes),
            f"{n.gpus_used}/{n.gpus_total}",
            f"{n.cost_per_hour:.2f}",
            n.layout,
        )
    console.print(nodes)
    for line in plan.binding:
        console.print(f"binding: {line}")
    for line in outcome.notes:
        console.print(f"why: {line}")
    for model, text in plan.shortfall.items():
        console.print(f"[red]missing ({model}):[/red] {text}")
    console.print(f"solved in {1000 * outcome.solve_seconds:.1f} ms")


def _as_json(outcome: PlanOutcome) -> dict[str, object]:
    plan = outcome.plan
    return {
        "feasible": plan.feasible,
        "cost_per_hour": round(plan.cost_per_hour, 6),
        "replicas": dict(plan.replicas),
        "nodes": dict(plan.nodes),
        "shortfall": dict(plan.shortfall),
        "binding": list(plan.binding),
        "cost_per_model": {k: round(v, 6) for k, v in plan.cost_per_model.items()},
        "capacity_per_replica": {r.pool: round(r.capacity_rps, 4) for r in outcome.pools},
        "notes": list(outcome.notes),
    }


def _warn_simulator_pools(fleet: FleetSpec) -> None:
    """One line on stderr when the values hold pools the chart refuses: the shipped default
    fleet (what `plan` reads without --fleet) serves every pool with the simulator, and
    `helm template`/`install` stops on each of them with `engine: "simulator" runs only on a
    laptop`."""
    simulated = [p.name for p in fleet.model_pools if p.engine is EngineKind.SIMULATOR]
    if simulated:
        typer.echo(
            f"note: the Helm chart refuses engine: simulator ({', '.join(simulated)}); "
            "set engine: vllm in the fleet file you plan (or in these values) before helm install",
            err=True,
        )


def _write_values(path: Path, fleet: FleetSpec, outcome: PlanOutcome) -> None:
    """The fleet as Helm values under `fleet:`: planned replicas as each pool's
    replicas.initial. Node pools are kept as they are: min_nodes is a floor the autoscaler
    and the Ray autoscaler never go below, so writing the planned (peak) nodes there would pay
    for them at every quiet hour; the Ray autoscaler brings up the nodes the initial replicas
    need (the chart's enableInTreeAutoscaling), and the autoscaler's node floors follow."""
    plan = outcome.plan
    model_pools = [
        p.model_copy(
            update={
                "replicas": p.replicas.model_copy(
                    update={"initial": plan.replicas.get(p.name, p.replicas.start)}
                )
            }
        )
        for p in fleet.model_pools
    ]
    planned = fleet.model_copy(update={"model_pools": model_pools})
    # Re-validate: model_copy skips validators, and the chart trusts this file.
    planned = FleetSpec.model_validate(planned.model_dump())
    header = (
        f"# Written by `gemma-fleet plan`: {plan.cost_per_hour:.2f} per hour, "
        f"{'meets demand' if plan.feasible else 'DOES NOT meet demand'}.\n"
    )
    body = yaml.safe_dump({"fleet": planned.model_dump(mode="json")}, sort_keys=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + body)
    except OSError as exc:
        raise CliError(f"{path}: cannot write values: {exc.strerror or exc}") from exc


# ---- traces --------------------------------------------------------------------------------


def _plan_trace(
    fleet: FleetSpec, trace: TraceFile, model: CapacityModel
) -> list[tuple[int, PlanOutcome]]:
    out = []
    for step in trace.hours:
        outcome = plan_fleet(
            fleet,
            trace.demand_at(step),
            trace.slos(),
            model,
            headroom=trace.headroom,
            on_demand_fraction=trace.on_demand_fraction,
        )
        out.append((step.hour, outcome))
    return out


def _print_trace(console: Console, hours: list[tuple[int, PlanOutcome]]) -> None:
    table = Table(title="Plan by hour")
    table.add_column("hour", justify="right")
    table.add_column("cost/h", justify="right")
    pools = list(hours[0][1].plan.nodes)
    for name in pools:
        table.add_column(f"{name} nodes", justify="right")
    table.add_column("meets demand")
    for hour, outcome in hours:
        plan = outcome.plan
        table.add_row(
            str(hour),
            f"{plan.cost_per_hour:.2f}",
            *(str(plan.nodes[n]) for n in pools),
            "yes" if plan.feasible else "[red]no[/red]",
        )
    console.print(table)
    total = sum(o.plan.cost_per_hour for _, o in hours)
    console.print(f"total over {len(hours)} hours: {total:.2f}")


def _draw(path: Path, trace: TraceFile, hours: list[tuple[int, PlanOutcome]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    xs = [h for h, _ in hours]
    fig, (ax_cost, ax_cap) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    ax_cost.step(xs, [o.plan.cost_per_hour for _, o in hours], where="post", label="plan")
    infeasible = [(h, o.plan.cost_per_hour) for h, o in hours if not o.plan.feasible]
    if infeasible:
        ax_cost.scatter(*zip(*infeasible, strict=True), color="red", label="demand not met")
    ax_cost.set_ylabel("cost per hour")
    ax_cost.set_title("Planned cost and capacity by hour")
    ax_cost.legend(loc="upper left")
    ax_cost.grid(alpha=0.3)
    for name in trace.models:
        need = [next((m.need_rps for m in o.models if m.model == name), 0.0) for _, o in hours]
        cap = [next((m.capacity_rps for m in o.models if m.model == name), 0.0) for _, o in hours]
        (line,) = ax_cap.step(xs, cap, where="post", label=f"{name} capacity")
        ax_cap.step(
            xs, need, where="post", linestyle="--", color=line.get_color(), label=f"{name} need"
        )
    ax_cap.set_yscale("symlog", linthresh=1.0)
    ax_cap.set_ylabel("requests per second")
    ax_cap.set_xlabel("hour")
    ax_cap.legend(loc="upper left", fontsize="small", ncol=2)
    ax_cap.grid(alpha=0.3)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise CliError(f"{path}: cannot write chart: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


__all__ = ["DemandFile", "TraceFile", "plan_command"]
