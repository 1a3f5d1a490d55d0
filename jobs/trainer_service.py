"""The training image's Bento (bentofile-train.yaml): nothing to serve. The image exists to run
`python -m jobs.retrain` with TensorFlow (the retrain CronJob); BentoML needs a service to build
a Bento, and this one only says which version of the project the image carries."""

from __future__ import annotations

import bentoml

import bentos


@bentoml.service(name="tabular-classifier-train")
class Trainer:
    @bentoml.api
    def version(self) -> str:
        return bentos.__version__
