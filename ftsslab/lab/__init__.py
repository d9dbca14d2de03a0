"""The lab engine: YAML scenarios on real namespaces and veth pairs, or in a deterministic sim."""
