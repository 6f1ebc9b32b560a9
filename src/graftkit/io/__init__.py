"""Checkpoint I/O: read headers and tensors lazily, write shards in place, publish outputs atomically.

GGUF files are read (dequantized to float32, HF names) and written (one llama.cpp file) here too.

This layer knows files, headers, shards and dtypes; it knows no merge method.
"""

from graftkit.io.checkpoint import Checkpoint
from graftkit.io.gguf_convert import convert_gguf
from graftkit.io.gguf_reader import GGUFCheckpoint
from graftkit.io.gguf_writer import GGUF_TYPES, GGUFFileWriter
from graftkit.io.layout import Format, find_layout
from graftkit.io.output import atomic_file, atomic_output, free_disk_bytes, partial_folder
from graftkit.io.quant import detect_quantization
from graftkit.io.shards import estimate_output_bytes, plan_shards, shard_file_names
from graftkit.io.side_files import copy_side_files, write_config, write_model_card
from graftkit.io.stats_folder import STATS_JSON, read_stats_info, stats_file, write_stats_folder
from graftkit.io.tensor_info import TensorEntry, TensorInfo, dtype_name
from graftkit.io.writer import JOURNAL_FILE, ShardedWriter, read_journal

__all__ = [
    "GGUF_TYPES",
    "JOURNAL_FILE",
    "STATS_JSON",
    "Checkpoint",
    "Format",
    "GGUFCheckpoint",
    "GGUFFileWriter",
    "ShardedWriter",
    "TensorEntry",
    "TensorInfo",
    "atomic_file",
    "atomic_output",
    "convert_gguf",
    "copy_side_files",
    "detect_quantization",
    "dtype_name",
    "estimate_output_bytes",
    "find_layout",
    "free_disk_bytes",
    "partial_folder",
    "plan_shards",
    "read_journal",
    "read_stats_info",
    "shard_file_names",
    "stats_file",
    "write_config",
    "write_model_card",
    "write_stats_folder",
]
