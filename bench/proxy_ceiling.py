"""The ceiling for any proxy in front of Kubo's gateway on this machine.

An aiohttp handler that forwards a 1 GiB file from Kubo's gateway to the client with
os.splice (socket -> pipe -> socket, no copy through Python), side by side with Kubo's
gateway itself, both measured with curl. It shows how close *any* node that proxies
Kubo can get to Kubo's own gateway on these 2 cores (2026-11-25: 1114-1166 vs
1492-1688 MiB/s, ~0.72x), i.e. why the 0.9x download goal is out of reach here.

    .venv/bin/python bench/proxy_ceiling.py

Not a test and not product code. The node (Kubo engine) now splices the same way
(storage/kubo.py file_socket, storage/splice.py), on its event loop.
"""
import asyncio, os, socket, sys, select, subprocess
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aiohttp import web
from tests.support.kubo import KuboDaemon, free_port

def splice_body(src_fd, dst_fd, n):
    r, w = os.pipe()
    try:
        import fcntl
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
    except Exception:
        pass
    left = n
    try:
        while left:
            try:
                got = os.splice(src_fd, w, min(left, 1 << 20))
            except BlockingIOError:
                select.select([src_fd], [], []); continue
            if got == 0:
                raise IOError("short")
            inpipe = got
            while inpipe:
                try:
                    sent = os.splice(r, dst_fd, inpipe)
                except BlockingIOError:
                    select.select([], [dst_fd], []); continue
                inpipe -= sent
            left -= got
    finally:
        os.close(r); os.close(w)

async def handler(request):
    cid = request.match_info['cid']
    gw = request.app['gw']
    s = socket.create_connection(gw)
    s.sendall(f"GET /ipfs/{cid} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)  # byte at a time so nothing of the body is consumed
    head = buf.decode()
    length = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
    resp = web.StreamResponse(headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    transport = request.transport
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.001)
    sock = transport.get_extra_info('socket')
    await asyncio.to_thread(splice_body, s.fileno(), sock.fileno(), length)
    s.close()
    return resp

async def main():
    k = KuboDaemon().start()
    path = os.path.join(k.repo, 'big.bin')
    subprocess.run(f"head -c 1073741824 /dev/urandom > {path}", shell=True)
    cid = k.ipfs("add", "-Q", "--cid-version=1", path).strip()
    app = web.Application(); app['gw'] = ('127.0.0.1', k.gateway_port)
    app.router.add_get('/ipfs/{cid}', handler)
    runner = web.AppRunner(app); await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, '127.0.0.1', port); await site.start()
    for label, url in [("splice proxy", f"http://127.0.0.1:{port}/ipfs/{cid}"), ("kubo gateway", f"{k.gateway_url}/ipfs/{cid}")] * 3:
        p = await asyncio.create_subprocess_exec("curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url, stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        sp, sz = out.decode().split()
        print(f"{label:13} {float(sp)/2**20:6.0f} MiB/s  ({sz} bytes)")
    await runner.cleanup(); k.cleanup()
asyncio.run(main())
