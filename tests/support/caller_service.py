"""A second BentoML service that calls the classifier through `bentoml.depends`, as a team's
own service would (tests/integration/test_native.py serves it)."""

from __future__ import annotations

import bentoml

from service import TabularClassifier


@bentoml.service(name="caller", http={"port": 3000})
class Caller:
    classifier = bentoml.depends(TabularClassifier)

    @bentoml.api
    async def relay(self, instances: list[dict]) -> dict:
        """The classifier's answer for `instances`, fetched through bentoml.depends."""
        answer = await self.classifier.to_async.predict(instances=instances)
        return answer if isinstance(answer, dict) else answer.model_dump()
