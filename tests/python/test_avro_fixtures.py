"""The Avro fixtures the Rust tests replay are the ecosystem serializers' own output.

Regenerates tests/fixtures/avro with confluent-kafka's AvroSerializer and fastavro and checks
the committed messages and recorded registry answers are byte for byte what they write, and
that the object-container file reads back (its sync marker is random, so it is compared by
content).
"""

import json
import os
import subprocess
import sys

import fastavro

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "avro")


def test_committed_avro_fixtures_are_what_the_serializers_write(tmp_path):
    subprocess.run(
        [sys.executable, os.path.join(FIXTURES, "generate.py"), str(tmp_path)], check=True
    )
    with open(os.path.join(FIXTURES, "fixtures.json")) as f:
        committed = json.load(f)
    with open(tmp_path / "fixtures.json") as f:
        fresh = json.load(f)
    assert committed == fresh
    with open(os.path.join(FIXTURES, "evolve_v2.avro"), "rb") as a, open(
        tmp_path / "evolve_v2.avro", "rb"
    ) as b:
        assert list(fastavro.reader(a)) == list(fastavro.reader(b))
