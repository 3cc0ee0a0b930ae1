{
  "targets": [
    {
      "target_name": "strata_native",
      "sources": ["strata_native.c", "tree_writer.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
