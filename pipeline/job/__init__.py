"""The annotation job (`run`, `validate`): its plan (every check before work starts, `plan`,
with what an earlier run left, `resume`), the Ray Data dataset it runs (`dataset`), the run
itself (`run`), its progress lines (`progress`) and closing summary (`summary`); the Ray
cluster it joins is `pipeline.stages.cluster`'s."""
