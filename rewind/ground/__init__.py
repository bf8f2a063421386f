"""The ground layer: what every other part of rewind stands on, importing nothing of the project.

Errors for people (:mod:`.errors`), settings (:mod:`.settings`), the native-build switch
(:mod:`.native_build`) and the Kafka wiring: the non-committing reader (:mod:`.kafka_reader`),
watermarks, partition counts and topics, the key partitioner and the offset sampler.
docs/architecture.md shows where it sits.
"""
