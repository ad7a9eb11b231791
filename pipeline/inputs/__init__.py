"""Reading an input's rows the way the job reads them, for the decode stage, the review page
and fine-tuning: image values to encoded bytes under the input's limits and allowed URIs
(`images`), and box lists to checked xyxy boxes (`boxes`)."""
