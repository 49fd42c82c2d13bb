async def test_upload_and_get(node, kubo, tmp_path):
    data = b"hello hearth\n"
    resp = await node.post("/api/v1/content?filename=hello.txt", data=data, headers=node.auth)
    body = await resp.json()
    assert resp.status == 201, body
    p = tmp_path / "h.txt"
    p.write_bytes(data)
    assert body["cid"] == kubo.add_only_hash(str(p), "--cid-version=1")
    resp = await node.get(f"/ipfs/{body['cid']}")
    assert resp.status == 200
    assert await resp.read() == data
