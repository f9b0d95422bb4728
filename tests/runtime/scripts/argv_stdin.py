import sys

print("argv:", sys.argv)
data = sys.stdin.read()
print("stdin:", len(data), data.upper().strip())
print("to stderr", file=sys.stderr)
