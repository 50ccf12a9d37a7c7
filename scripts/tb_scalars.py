"""Print selected TensorBoard scalars of a run directory as a table (step, value per tag).

Usage: python scripts/tb_scalars.py RUN_DIR [TAG_PREFIX ...]
"""

import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    run_dir, prefixes = sys.argv[1], sys.argv[2:] or ["eval/mean_reward", "gates/sum_keep_prob/", "params/expected_"]
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["scalars"] if any(t.startswith(p) for p in prefixes)]
    rows: dict[int, dict[str, float]] = {}
    for tag in tags:
        for event in acc.Scalars(tag):
            rows.setdefault(event.step, {})[tag] = event.value
    print("step\t" + "\t".join(tags))
    for step in sorted(rows):
        print(f"{step}\t" + "\t".join(f"{rows[step].get(t, float('nan')):.1f}" for t in tags))


if __name__ == "__main__":
    main()
