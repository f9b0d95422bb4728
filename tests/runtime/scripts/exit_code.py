import sys

print("leaving with", sys.argv[1])
arg = sys.argv[1]
sys.exit(int(arg) if arg.isdigit() else arg)
