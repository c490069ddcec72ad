#!/usr/bin/env python3
"""A TCP proxy whose connections the test cuts on cue (standard library only).

Usage: cut_proxy.py SERVER_PORT

Listens on a free loopback port and prints "listening on PORT"; forwards
every connection to 127.0.0.1:SERVER_PORT. On SIGUSR1 it cuts every
connection open at that moment (both sides, at once) and prints "cut N".
New connections are forwarded as before, so a client can reconnect through
it. The cut is the test's decision, never a timer's.
"""
import signal
import socket
import sys
import threading

# Reentrant: the SIGUSR1 handler runs on the main thread, which may hold it.
lock = threading.RLock()
open_pairs = []  # [client_socket, server_socket] of each open connection


def close_pair(pair):
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def pump(source, sink, pair):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    with lock:
        if pair in open_pairs:
            open_pairs.remove(pair)
            close_pair(pair)


def cut(_signum, _frame):
    with lock:
        pairs = list(open_pairs)
        open_pairs.clear()
        for pair in pairs:
            close_pair(pair)
    print(f"cut {len(pairs)}", flush=True)


def main():
    server_port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    signal.signal(signal.SIGUSR1, cut)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", server_port))
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = [client, upstream]
        with lock:
            open_pairs.append(pair)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, sink, pair), daemon=True).start()


if __name__ == "__main__":
    main()
