"""`finetune`: HQ fine-tuning on your own labelled data: the checks before it starts (`plan`),
the labelled rows (`data`), the scores before and after (`scoring`, `report`), what it writes
(`result`) and the run (`run`): in this process, or on Ray Train's workers (`distributed`, each
worker's loop in `worker`, its batches in `shard`, its training checkpoints in
`training_state`)."""
