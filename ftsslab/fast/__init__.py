"""Fast struct/memoryview parsers and builders, proven equal to the Scapy layers."""
