"""Stage validate: check every key of params.yaml, also keys that no other stage reads.

DVC reruns a stage only when a params key it declares changes, so a misspelt key (say
``train.epoch``) would otherwise be ignored without a word. This stage depends on the whole
file and fails on any key that the pipeline does not know.
"""

from gradsort.params import load_params
from gradsort.stage import run_stage


def main(say):
    params = load_params()
    say(f"params.yaml is valid ({len(params.optimizers)} optimizers)")


if __name__ == "__main__":
    run_stage("validate", main)
