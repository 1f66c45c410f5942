"""The paper's four VBench metrics, one module each; every metric scores uint8 [T, H, W, 3] videos."""
