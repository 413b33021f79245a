"""torchrun driver for the multi-rank tests: a real pretraining run that also records each rank's batches.

`python -m torch.distributed.run ... batch_recorder.py TOML DIGEST_DIR`: every batch a rank trains on
is appended to DIGEST_DIR/batches-rank<R>.txt as the sha256 of its input ids, so a test can check
that ranks read different data and that nothing repeats.
"""

import hashlib
import os
import sys

from torchtitan import train

original = train.Trainer.batch_generator


def recording(self, data_iterable):
    path = os.path.join(sys.argv[2], f"batches-rank{os.environ['RANK']}.txt")
    with open(path, "a") as out:
        for input_dict, labels in original(self, data_iterable):
            out.write(hashlib.sha256(input_dict["input"].numpy().tobytes()).hexdigest() + "\n")
            out.flush()
            yield input_dict, labels


if __name__ == "__main__":
    train.Trainer.batch_generator = recording
    from molgen3D.training.pretraining.torchtitan_runner import run_pretraining

    run_pretraining(sys.argv[1])
