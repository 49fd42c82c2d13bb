// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// A small ENS Universal Resolver (what web3's AsyncENS calls at its fixed address): findResolver
// walks the DNS-encoded name up to the closest ancestor with a resolver in the registry, and
// resolve calls that resolver, through ENSIP-10 `resolve(bytes,bytes)` when the resolver supports
// it (required for a wildcard: a resolver found on an ancestor), else directly with the calldata.
// An EIP-3668 OffchainLookup revert from the resolver is passed up as it is (sender = the
// resolver), for the client to perform; any other failure reverts ResolverError.
interface IENSRegistry {
    function resolver(bytes32 node) external view returns (address);
}

interface IExtendedResolver {
    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory);
}

contract UniversalResolver {
    IENSRegistry public immutable registry;

    error ResolverNotFound(bytes name);
    error ResolverWildcardNotSupported(bytes name);
    error ResolverError(bytes returnData);

    bytes4 private constant EXTENDED = 0x9061b923;
    bytes4 private constant OFFCHAIN_LOOKUP = 0x556f1830;

    constructor(address registry_) {
        registry = IENSRegistry(registry_);
    }

    /// The resolver of `name` (or of its closest ancestor that has one), the namehash of `name`,
    /// and the offset in `name` of the label where that resolver was found (0: the name itself).
    function findResolver(bytes calldata name) public view returns (address, bytes32, uint256) {
        return _find(name, 0);
    }

    function _find(bytes calldata name, uint256 offset) internal view returns (address, bytes32, uint256) {
        uint256 len = uint8(name[offset]);
        if (len == 0) return (address(0), bytes32(0), offset);
        uint256 next = offset + 1 + len;
        bytes32 label = keccak256(name[offset + 1:next]);
        (address parentResolver, bytes32 parentNode, uint256 parentOffset) = _find(name, next);
        bytes32 node = keccak256(abi.encodePacked(parentNode, label));
        address own = registry.resolver(node);
        if (own != address(0)) return (own, node, offset);
        return (parentResolver, node, parentOffset);
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory, address) {
        (address resolver,, uint256 offset) = findResolver(name);
        if (resolver == address(0)) revert ResolverNotFound(name);
        bool ok;
        bytes memory ret;
        if (_supportsExtended(resolver)) {
            (ok, ret) = resolver.staticcall(abi.encodeCall(IExtendedResolver.resolve, (name, data)));
            if (ok) ret = abi.decode(ret, (bytes));
        } else if (offset != 0) {
            revert ResolverWildcardNotSupported(name);
        } else {
            (ok, ret) = resolver.staticcall(data);
        }
        if (!ok) {
            if (ret.length >= 4 && bytes4(ret) == OFFCHAIN_LOOKUP) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
            revert ResolverError(ret);
        }
        return (ret, resolver);
    }

    function _supportsExtended(address resolver) internal view returns (bool) {
        (bool ok, bytes memory ret) =
            resolver.staticcall{gas: 30000}(abi.encodeWithSelector(0x01ffc9a7, EXTENDED));
        return ok && ret.length >= 32 && abi.decode(ret, (bool));
    }
}
