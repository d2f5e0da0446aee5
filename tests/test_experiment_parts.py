"""fpac-experiment's parts without running any training: curves and their mean/std by hand, the
table, the reference file, agents and their check against fpac-train, grid specs, the Slurm script."""
from __future__ import annotations

import json
import os

import pytest

from studies import agents as agents_mod
from studies.curves import across_seeds, common_grid, curve_from_records, mean_curve, value_at
from studies.figures import draw_grid
from studies.grid import GridError, GridSpec, expand_tasks, merge_spec, parse_seeds
from studies.references import load_references
from studies.slurm import SlurmOptions, sbatch_script
from studies.table import markdown_table, our_scores, steps_label


def recs(*pairs):
    return [{"env_steps": x, "mean_return": y} for x, y in pairs]


def test_mean_and_std_across_seeds_by_hand() -> None:
    a = curve_from_records(recs((0, 0.0), (100, 10.0), (200, 30.0)))
    b = curve_from_records(recs((0, 0.0), (100, 20.0), (200, 10.0)))
    c = curve_from_records(recs((0, 0.0), (100, 30.0)))  # stopped at 100
    # At 100: 10, 20, 30 -> mean 20, population std sqrt((100 + 0 + 100) / 3) = 8.165.
    p = across_seeds([a, b, c], 100)
    assert (p.mean, p.n) == (20.0, 3) and p.std == pytest.approx(8.16496581)
    # At 150: a 20 (between 10 and 30), b 15 (between 20 and 10); c has not got there.
    p = across_seeds([a, b, c], 150)
    assert (p.mean, p.std, p.n) == (17.5, 2.5, 2)
    assert across_seeds([a, b, c], 250) is None  # no run reached 250


def test_value_at_interpolates_and_stays_inside_the_evaluated_range() -> None:
    curve = curve_from_records(recs((124, -40.0), (266, -60.0), (312, -30.0)))
    assert value_at(curve, 266) == -60.0
    assert value_at(curve, 195) == pytest.approx(-50.0)  # halfway between 124 and 266
    assert value_at(curve, 100) is None and value_at(curve, 313) is None


def test_a_resumed_run_keeps_its_latest_timeline() -> None:
    # Evaluated at 100, 200, 300; stopped; resumed from its checkpoint at 150: 200 and 300 again.
    curve = curve_from_records(recs((100, 1.0), (200, 2.0), (300, 3.0), (200, 20.0), (300, 30.0)))
    assert curve == [(100.0, 1.0), (200.0, 20.0), (300.0, 30.0)]
    # A second evaluation at the same env steps (the same policy version) replaces the first.
    assert curve_from_records(recs((124, -39.0), (124, -12.0))) == [(124.0, -12.0)]


def test_mean_curve_covers_only_what_every_seed_reached() -> None:
    a = curve_from_records(recs((109, 1.0), (266, 2.0), (312, 3.0)))
    b = curve_from_records(recs((124, 1.0), (250, 5.0), (300, 4.0)))
    assert common_grid([a, b], step=100) == [124.0, 200.0, 300.0]
    points = mean_curve([a, b], step=100)
    assert [p.x for p in points] == [124.0, 200.0, 300.0] and all(p.n == 2 for p in points)
    assert common_grid([a, b]) == [124.0, 250.0, 266.0, 300.0]  # no step: the evaluation points


def test_table_shows_ours_references_and_na() -> None:
    curves = {("cartpole_swingup", "fpac"): [curve_from_records(recs((0, 0.0), (100000, 700.0))),
                                             curve_from_records(recs((0, 0.0), (100000, 800.0)))],
              ("cartpole_swingup", "sac-state"): [
                  curve_from_records(recs((0, 0.0), (100000, 900.0), (200000, 950.0))),
                  curve_from_records(recs((0, 0.0), (50000, 100.0)))]}
    rows = our_scores(curves, [100000, 500000])
    md = markdown_table(rows, [100000, 500000], load_references())
    lines = md.splitlines()
    assert lines[0] == "| task | agent | 100k env steps | 500k env steps |"
    assert "| cartpole_swingup | fpac (ours, 2 seeds) | 750.0 ± 50.0 | n/a |" in lines
    assert "| cartpole_swingup | sac-state (ours, 2 seeds) | 900.0 ± 0.0 (1 of 2 seeds) | n/a |" \
        in lines
    assert "| cartpole_swingup | DrQ [1] | 759 ± 92 | 868 ± 10 |" in lines
    assert any(line.startswith("[1] DrQ: I. Kostrikov") for line in lines)
    # A task without published scores gets no reference rows and no citations.
    md = markdown_table(our_scores({("point_reach", "fpac"): []}, [300]), [300], load_references())
    assert "| point_reach | fpac (ours, 0 seeds) | n/a |" in md and "[1]" not in md
    assert (steps_label(100000), steps_label(1500000), steps_label(312)) == ("100k", "1.5M", "312")


def test_reference_file_cites_every_method_at_100k_and_500k() -> None:
    refs = load_references()
    assert [r.method for r in refs] == ["DrQ", "CURL", "SAC-state (DrQ)", "SAC-state (CURL)"]
    planet = {"cartpole_swingup", "reacher_easy", "cheetah_run", "finger_spin",
              "ball_in_cup_catch", "walker_walk"}
    for ref in refs:
        assert "Table 1" in ref.source and set(ref.scores) == planet
        assert all(set(s) == {100000, 500000} for s in ref.scores.values())
    assert refs[3].at("cartpole_swingup", 100000) == (835.0, 22.0)  # as bench/README cites


def test_agents_expand_groups_and_refuse_unknown_names() -> None:
    cat = agents_mod.load_catalogue()
    assert cat.expand(["fig8"]) == ["fig8-k8", "fig8-k16", "fig8-k24", "fpac", "fig8-k64"]
    assert cat.expand(["fpac", "fig11"]) == ["fpac", "fig11-no-scalar-feature"]
    with pytest.raises(agents_mod.AgentError, match="unknown agent 'nope'"):
        cat.expand(["fpac", "nope"])
    pre = cat.agents["sac-pretrained"]
    assert agents_mod.missing_needs(pre, []) == ["--pretrained"]
    assert agents_mod.missing_needs(pre, ["--pretrained=/x.pt"]) == []


def test_an_agents_file_adds_agents(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"agents": {"k4": {"flags": ["--num-points", "4"]}}}))
    cat = agents_mod.load_catalogue(str(path))
    assert cat.agents["k4"].flags == ("--num-points", "4") and "fpac" in cat.agents
    path.write_text(json.dumps({"agents": {"bad": {"flags": "--num-points 4"}}}))
    with pytest.raises(agents_mod.AgentError, match="'bad' needs 'flags', a list"):
        agents_mod.load_catalogue(str(path))


def test_flags_fpac_train_lacks_are_refused_before_anything_runs() -> None:
    cat = agents_mod.Catalogue({
        "ok": agents_mod.Agent("ok", ("--num-points", "8")),
        "new": agents_mod.Agent("new", ("--encoder", "nonesuch"), requires="a newer fpac-train"),
        "typo": agents_mod.Agent("typo", ("--num-pionts", "8"))})
    configs = agents_mod.check_agents(cat, [("point_reach", "ok")], [])
    assert configs[("point_reach", "ok")]["agent"]["num_points"] == 8
    with pytest.raises(agents_mod.AgentError) as e:
        agents_mod.check_agents(cat, [("point_reach", a) for a in ("ok", "new", "typo")], [])
    msg = str(e.value)
    assert "'new' on point_reach" in msg and "a newer fpac-train" in msg and "nonesuch" in msg
    assert "'typo' on point_reach" in msg and "--num-pionts" in msg and "'ok'" not in msg


def test_tasks_seeds_and_a_changed_grid() -> None:
    assert expand_tasks(["tiny"]) == ["point_reach"]
    planet = expand_tasks(["planet"])  # the paper's Fig. 4: the six tasks with published scores
    assert set(planet) == set(load_references()[0].scores)
    assert expand_tasks(["cheetah_run", "planet"]) == ["cheetah_run"] + \
        [t for t in planet if t != "cheetah_run"]
    with pytest.raises(GridError, match="unknown task 'nope'"):
        expand_tasks(["nope"])
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("a", "1,1", ""):
        with pytest.raises(GridError):
            parse_seeds(bad)
    old = GridSpec(["point_reach"], {"fpac": []}, [0, 1], env_steps=300)
    assert merge_spec(old, None, "G") is old
    with pytest.raises(GridError, match=r"seeds: \[0, 1\] \(stored\) vs \[0, 1, 2\] \(given\)"):
        merge_spec(old, GridSpec(["point_reach"], {"fpac": []}, [0, 1, 2], env_steps=300), "G")


def test_slurm_script_has_one_array_task_per_run(tmp_path) -> None:
    root = str(tmp_path / "grid")
    spec = GridSpec(["cheetah_run"], {"fpac": [], "sac-state": ["--encoder", "state"]}, [0, 1],
                    env_steps=500000, actors_per_run=4)
    runs = spec.runs(root)
    text = sbatch_script(root, spec, runs, SlurmOptions(time="10:00:00", partition="gpu",
                                                        max_parallel=2, extra=["--account=a"]),
                         python="/venv/bin/python")
    lines = text.splitlines()
    for expected in ("#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=5", "#SBATCH --gres=gpu:1",
                     "#SBATCH --time=10:00:00", "#SBATCH --partition=gpu",
                     "#SBATCH --account=a", "#SBATCH --signal=B:TERM@300"):
        assert expected in lines
    start = lines.index("RUNS=(")
    assert [s.strip() for s in lines[start + 1:start + 5]] == [r.key for r in runs]
    assert lines[start + 5] == ")"
    # The comment of array task 3 is that run's fpac-train command.
    task3 = next(line for line in lines if line.startswith("#   [3] "))
    assert (f"--run-dir {os.path.join(root, 'cheetah_run', 'sac-state', 'seed-1')}" in task3
            and "--encoder state" in task3 and "--actors 4" in task3 and "--seed 1" in task3)
    assert lines[-1].endswith('run-one --grid ' + root + ' --run "${RUNS[$SLURM_ARRAY_TASK_ID]}"')
    with pytest.raises(ValueError, match="every run of the grid is DONE"):
        sbatch_script(root, spec, [], SlurmOptions())


def test_figure_draws_mean_curves_and_the_published_markers() -> None:
    import matplotlib.pyplot as plt

    a = curve_from_records(recs((0, 0.0), (50000, 300.0), (100000, 700.0)))
    b = curve_from_records(recs((0, 100.0), (50000, 500.0), (100000, 900.0)))
    curves = {("cartpole_swingup", "fpac"): [a, b], ("point_reach", "fpac"): [a]}
    fig = draw_grid(curves, ["cartpole_swingup", "point_reach"], ["fpac"], load_references(),
                    [100000, 500000], step=50000)
    try:
        cart, point = fig.axes[:2]
        assert cart.get_title() == "cartpole_swingup" and point.get_title() == "point_reach"
        mean = [ln for ln in cart.lines if ln.get_label().startswith("fpac")][0]
        assert list(mean.get_xdata()) == [0, 50000, 100000]
        assert list(mean.get_ydata()) == [50.0, 400.0, 800.0]  # the seeds' means
        drq = [c for c in cart.containers if c.get_label() == "DrQ"][0]
        assert list(drq.lines[0].get_xdata()) == [100000, 500000]
        assert list(drq.lines[0].get_ydata()) == [759.0, 868.0]  # DrQ Table 1
        assert point.containers == []  # no published scores for the tiny task
    finally:
        plt.close(fig)
