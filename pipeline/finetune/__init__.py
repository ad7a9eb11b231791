"""`finetune`: HQ fine-tuning on your own labelled data: the checks before it starts (`plan`),
the labelled rows (`data`), the scores before and after (`scoring`, `report`) and the run
(`run`)."""
