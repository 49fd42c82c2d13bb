// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// For tests only: an ENSIP-10 wildcard resolver. Every name under the one it is set on answers
// the same address and contenthash; text(key) answers "<key>@<first label of the name>", so a
// test sees which name reached it.
contract TestWildcardResolver {
    address public addrValue;
    bytes public contenthashValue;

    function setAddr(address a) external {
        addrValue = a;
    }

    function setContenthash(bytes calldata h) external {
        contenthashValue = h;
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 || id == 0x9061b923;
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory) {
        bytes4 selector = bytes4(data[:4]);
        if (selector == 0x3b3b57de) return abi.encode(addrValue); // addr(bytes32)
        if (selector == 0xf1cb7e06) { // addr(bytes32,uint256)
            (, uint256 coinType) = abi.decode(data[4:], (bytes32, uint256));
            return abi.encode(coinType == 60 ? abi.encodePacked(addrValue) : bytes(""));
        }
        if (selector == 0xbc1c58d1) return abi.encode(contenthashValue); // contenthash(bytes32)
        if (selector == 0x59d1d43c) { // text(bytes32,string)
            (, string memory key) = abi.decode(data[4:], (bytes32, string));
            uint256 len = uint8(name[0]);
            return abi.encode(string.concat(key, "@", string(name[1:1 + len])));
        }
        return abi.encode(bytes(""));
    }
}
