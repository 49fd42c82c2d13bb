// SPDX-License-Identifier: MIT
// A test contract for EIP-3668 CCIP-read (tests/test_ccip_read.py): lookup(query) reverts with
// OffchainLookup pointing at the gateways set by setUrls; the callback checks that extraData
// carries the query, then either starts another lookup (while fewer than `rounds` were made)
// or returns abi.encode(response, lookups made). lookupAs() names another address as sender
// (as a lookup bubbling up from a nested call would).
pragma solidity ^0.8.20;

contract CcipTest {
    error OffchainLookup(address sender, string[] urls, bytes callData, bytes4 callbackFunction, bytes extraData);

    string[] private gateways;
    uint256 public rounds = 1;

    function setUrls(string[] calldata urls) external {
        delete gateways;
        for (uint256 i = 0; i < urls.length; i++) {
            gateways.push(urls[i]);
        }
    }

    function setRounds(uint256 n) external {
        rounds = n;
    }

    function lookup(bytes calldata query) external view returns (bytes memory, uint256) {
        revert OffchainLookup(address(this), gateways, query, this.callback.selector, abi.encode(query, uint256(1)));
    }

    function lookupAs(address sender, bytes calldata query) external view returns (bytes memory, uint256) {
        revert OffchainLookup(sender, gateways, query, this.callback.selector, abi.encode(query, uint256(1)));
    }

    function callback(bytes calldata response, bytes calldata extraData) external view returns (bytes memory, uint256) {
        (bytes memory query, uint256 made) = abi.decode(extraData, (bytes, uint256));
        if (made < rounds) {
            bytes memory next = abi.encodePacked(query, uint8(made));
            revert OffchainLookup(address(this), gateways, next, this.callback.selector, abi.encode(query, made + 1));
        }
        return (response, made);
    }
}
