"""segwatch's stream-processing shell: Kafka and Elasticsearch I/O around the ``detector`` core."""

__all__: list[str] = []
