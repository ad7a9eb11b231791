"""Reading an input's rows the way the job reads them, for the decode stage, the review page
and fine-tuning: image values to encoded bytes under the input's limits and allowed URIs
(`images`), box lists to checked xyxy boxes (`boxes`), and a row's prompt columns (boxes,
points and their labels, mask prompts) to its prompts, each checked against the image
(`prompts`)."""
