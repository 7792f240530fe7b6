"""The lab: the benchmark suite, the chaos run and measuring tools. It drives the product from
outside; nothing in the product imports it."""
