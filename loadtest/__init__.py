"""`kbrec loadtest`: an open- and closed-loop load generator for kbrec and Triton.

Open-loop latency counts from each request's scheduled send time, so a stalled
server shows in the percentiles instead of silently slowing the generator down
(coordinated omission). See `kbrec loadtest --help` and README "Load testing".
"""
