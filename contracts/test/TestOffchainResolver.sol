// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// For tests only: an ENSIP-10 resolver that answers offchain (EIP-3668), as ENS offchain resolvers
// do: resolve(name, data) reverts OffchainLookup(this, urls, abi.encode(name, data), resolveCallback,
// data), and the callback returns the gateway's response as the answer (abi-encoded result of
// `data`). No signature check: the tests' gateway is trusted.
contract TestOffchainResolver {
    error OffchainLookup(address sender, string[] urls, bytes callData, bytes4 callbackFunction, bytes extraData);

    string[] private gateways;

    function setUrls(string[] calldata urls) external {
        delete gateways;
        for (uint256 i = 0; i < urls.length; i++) {
            gateways.push(urls[i]);
        }
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 || id == 0x9061b923;
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory) {
        revert OffchainLookup(address(this), gateways, abi.encode(name, data), this.resolveCallback.selector, data);
    }

    function resolveCallback(bytes calldata response, bytes calldata) external pure returns (bytes memory) {
        return response;
    }
}
