namespace Kintsugi.Protocol.Operator;

// The operator API's request bodies (docs/server.md).

/// <param name="Channel">The target channel; null for the next one.</param>
public sealed record PromoteRequest(string? Channel = null, string? Reason = null);

public sealed record RevokeRequest(string Reason);

/// <param name="Manual">True: only manual promotion into this channel.</param>
public sealed record ChannelRequest(long? PromoteAfterSeconds = null, int? MinApplied = null, bool? Manual = null);

public sealed record EnrollmentTokenRequest(
    string Channel, string? Description = null, long? ExpiresInSeconds = null, int? MaxUses = null);

/// <param name="Role">admin, operator or auditor.</param>
public sealed record ApiTokenRequest(string Role, string Name, long? ExpiresInSeconds = null);

public sealed record MoveMachineRequest(string Channel);

/// <param name="Pem">A publisher public key (SubjectPublicKeyInfo PEM).</param>
public sealed record PublisherKeyRequest(string Pem);

/// <summary>Signed release metadata (docs/bundle-format.md): the envelope as JSON text, exactly as signed.</summary>
public sealed record ReleaseMetadataRequest(string Metadata);

public sealed record TrustRootRequest(string Document);
