"""The local launcher's Pipes message reader: a message the child is still writing is never parsed
half-way (tenali_pipeline/launchers/file_messages.py)."""

import json
import sys
import textwrap
import threading
import time

import dagster as dg

from tenali_pipeline.launchers.file_messages import WholeLineMessageReader, whole_lines


def _slow_writer(path, parts, done: threading.Event, pause=0.05):
    for part in parts:
        with open(path, "a", encoding="utf-8") as f:
            f.write(part)
        time.sleep(pause)
    done.set()


def test_a_line_written_in_pieces_comes_out_whole(tmp_path):
    path = tmp_path / "messages"
    path.write_text("")
    big = json.dumps({"method": "report", "params": {"curve": "x" * 5000}})
    parts = [big[:62], big[62:3000], big[3000:] + "\n", '{"method": "closed"}\n', '{"tail": 1}']
    done = threading.Event()
    writer = threading.Thread(target=_slow_writer, args=(str(path), parts, done))
    writer.start()
    lines = list(whole_lines(str(path), done.is_set, poll=0.005))
    writer.join()
    assert [json.loads(line) for line in lines] == [json.loads(big), {"method": "closed"}, {"tail": 1}]


def test_what_is_written_just_before_the_end_is_read(tmp_path):
    path = tmp_path / "messages"
    path.write_text("")
    done = threading.Event()

    def finish():
        time.sleep(0.05)
        with open(path, "a", encoding="utf-8") as f:
            f.write('{"last": true}\n')
        done.set()  # the reader may be asleep: it must still drain the file once more
    threading.Thread(target=finish).start()
    assert [json.loads(line) for line in whole_lines(str(path), done.is_set, poll=0.2)] == [{"last": True}]


CHILD = textwrap.dedent("""
    import time
    import dagster_pipes
    from dagster_pipes import PipesFileMessageWriterChannel

    def write_in_pieces(self, message):  # as a slow disk or a busy machine would
        text = __import__("json").dumps(message) + "\\n"
        for i in range(0, len(text), 40):
            with open(self._path, "a", encoding="utf-8") as f:
                f.write(text[i:i + 40])
            time.sleep(0.002)
    PipesFileMessageWriterChannel.write_message = write_in_pieces

    with dagster_pipes.open_dagster_pipes() as pipes:
        pipes.log.info("training")
        pipes.report_asset_materialization(metadata={"curve": "y" * 3000, "loss": 1.25})
""")


def test_a_materialisation_written_in_pieces_reaches_dagster(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    @dg.asset
    def trained(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        return pipes.run(command=[sys.executable, str(script)], context=context).get_materialize_result()

    result = dg.materialize([trained], resources={"pipes": dg.PipesSubprocessClient(
        message_reader=WholeLineMessageReader())}, raise_on_error=False)
    assert result.success
    [mat] = result.asset_materializations_for_node("trained")
    assert mat.metadata["loss"].value == 1.25 and mat.metadata["curve"].value == "y" * 3000
