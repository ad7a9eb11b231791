"""The checks that run before any work starts, shared by the job's plan (`pipeline.job.plan`)
and fine-tuning's: local paths resolved (`paths`), the input's files and their footers
(`input_files`), the configured columns' types (`columns`), the first rows' evidence of a
wrong config (`samples`), the checkpoint's header (`checkpoint`), where results may go
(`output_dir`) and whether the actors fit the cluster (`resources`). Each returns the problems
it found, worded as `section.key: what is wrong`, so that every one is named at once."""
