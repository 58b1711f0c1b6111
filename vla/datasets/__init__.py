"""LeRobot v3 datasets: recording, a zarr frame cache for fast training, converters, statistics and validation.

    writer.py          crash-safe episode recording (EpisodeWriter)
    synthetic.py       a small generated dataset for tests and the demo
    lerobot_io.py      streaming reads of a dataset's files (LeRobotSource), the decoder the cache shares
    frame_store.py     frame arrays in zarr: codec chosen by measurement, a fast reader
    cache.py           the frame cache beside a dataset: build, manifest, staleness
    cached_dataset.py  CachedLeRobotDataset (drop-in for LeRobotDataset) and open_dataset (`vla train` uses it)
    replay_buffer.py   LeRobot v3 <-> Diffusion Policy / UMI zarr replay buffer
    stats.py           exact statistics with quantiles, pooled over datasets
    check.py           validation (check_media.py: videos and images)
    cli.py             `vla data cache | check | stats | convert`

Nothing is imported here, so `vla` starts without loading LeRobot, torch or zarr.
"""
