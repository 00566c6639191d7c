from paddlevision.datasets.folder import ImageFolder, ListDataset, collate_skip_bad, extract_lite_data

__all__ = ["ImageFolder", "ListDataset", "collate_skip_bad", "extract_lite_data"]
