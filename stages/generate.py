"""Stage generate: make mnist1d offline from data.* and write data/mnist1d.npz."""

from gradsort.data import make_dataset, save_dataset
from gradsort.params import load_params
from gradsort.stage import run_stage

OUT = "data/mnist1d.npz"


def main(say):
    data = load_params(trial_step=False).data
    arrays = make_dataset(data.num_samples, data.train_split, data.seed)
    save_dataset(OUT, arrays)
    say(f"wrote {OUT}: {len(arrays['y'])} train and {len(arrays['y_test'])} test samples")


if __name__ == "__main__":
    run_stage("generate", main)
