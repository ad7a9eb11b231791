"""The Ray Data annotation pipeline over samhq_core's SAM-HQ: the job (`job`, its `stages`, the
`checks` before it starts), what reads its input (`inputs`) and its output (`output`), the
commands that use an output (`exports`, `review`, `evaluation`, `finetune`, `demo`), and the
floor they all stand on (`config`, `storage`, `masks`, `schema`, `ids`, `text`). The command
line is `cli`."""
