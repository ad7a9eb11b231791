"""A job's masks in the formats other tools read: COCO instances with RLE or polygons (`coco`),
an Ultralytics YOLO segmentation dataset (`yolo`) and Label Studio tasks (`label_studio`),
each streamed from the results (`pipeline.output.results.ResultReader`) in bounded memory."""
