"""Drives `webr1 chat` through a pseudo-terminal as a person would: two turns, a third answer stopped with Ctrl-C,
then /reset and /exit. Prints one JSON object with the transcript and the prefill line of each turn.

usage: drive_chat.py WEBR1 MODEL [extra chat arguments...]
"""
import json
import os
import pty
import re
import select
import sys
import time

webr1, model, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(webr1, [webr1, "chat", model, *extra])

transcript = b""
cursor = 0  # characters of the decoded transcript already matched


def read_until(pattern, timeout):
    """Reads the terminal until `pattern` (a regex) matches the text after the previous match."""
    global transcript, cursor
    deadline = time.time() + timeout
    while True:
        text = transcript.decode("utf-8", "replace")
        m = re.compile(pattern).search(text, cursor)
        if m:
            cursor = m.end()
            return m
        if time.time() > deadline:
            break
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
    raise SystemExit("timed out waiting for %r; the terminal showed:\n%s" % (pattern, transcript.decode("utf-8", "replace")))


PROMPT = r"\n> "
PREFILL = r"prefill (\d+) new tokens \((\d+) of (\d+) cached\)[^\n]*· (\w+)(?=\r?\n)"  # the whole line
turns = []
read_until(PROMPT, 900)
for text in ["What is the capital of France?", "And of Germany?"]:
    os.write(fd, (text + "\n").encode())
    m = read_until(PREFILL, 900)
    turns.append({"new": int(m.group(1)), "cached": int(m.group(2)), "prompt": int(m.group(3)), "finish": m.group(4)})
    read_until(PROMPT, 60)

# A long answer, stopped with Ctrl-C once it has started.
os.write(fd, b"Count from 1 to 1000, separated by commas.\n")
read_until(r"commas\.\r?\n", 60)  # the terminal's echo of the line
read_until(r"\d[, ]*\d[, ]*\d", 900)  # the answer has begun
os.write(fd, b"\x03")
m = read_until(PREFILL, 300)
stopped = {"new": int(m.group(1)), "cached": int(m.group(2)), "prompt": int(m.group(3)), "finish": m.group(4)}
read_until(PROMPT, 60)
os.write(fd, b"/reset\n")
read_until(r"new conversation", 60)
read_until(PROMPT, 60)
os.write(fd, b"/exit\n")
_, status = os.waitpid(pid, 0)
try:
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        transcript += chunk
except OSError:
    pass
print(json.dumps({"turns": turns, "stopped": stopped, "exit": os.waitstatus_to_exitcode(status),
                  "transcript": transcript.decode("utf-8", "replace")}))
