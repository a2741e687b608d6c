using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Protocol.Operator;

/// <summary>
/// The operator API's JSON, generated at compile time so that the trimmed CLI reads replies with the very types
/// the server writes: web defaults (camelCase), indented, every field written (nulls too), and on reading a
/// missing required field or a null in a non-nullable one refused.
/// </summary>
[JsonSourceGenerationOptions(
    JsonSerializerDefaults.Web,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(ServerInfo))]
[JsonSerializable(typeof(IReadOnlyList<ChannelView>))]
[JsonSerializable(typeof(ChannelView))]
[JsonSerializable(typeof(IReadOnlyList<ReleaseView>))]
[JsonSerializable(typeof(ReleaseView))]
[JsonSerializable(typeof(PublishResult))]
[JsonSerializable(typeof(IReadOnlyList<PublishResult>))]
[JsonSerializable(typeof(PromoteResult))]
[JsonSerializable(typeof(IReadOnlyList<MachineView>))]
[JsonSerializable(typeof(MachineView))]
[JsonSerializable(typeof(IReadOnlyList<EnrollmentTokenView>))]
[JsonSerializable(typeof(IssuedEnrollmentToken))]
[JsonSerializable(typeof(IReadOnlyList<ApiTokenView>))]
[JsonSerializable(typeof(IssuedApiToken))]
[JsonSerializable(typeof(IReadOnlyList<PublisherKeyView>))]
[JsonSerializable(typeof(PublisherKeyView))]
[JsonSerializable(typeof(TimestampKeyView))]
[JsonSerializable(typeof(ReleaseMetadataView))]
[JsonSerializable(typeof(IReadOnlyList<AuditEvent>))]
[JsonSerializable(typeof(AuditVerification))]
[JsonSerializable(typeof(AptPackageView))]
[JsonSerializable(typeof(ExportIndex))]
[JsonSerializable(typeof(ImportResult))]
[JsonSerializable(typeof(FleetReport))]
[JsonSerializable(typeof(ExposureReport))]
[JsonSerializable(typeof(ComplianceReport))]
[JsonSerializable(typeof(PromoteRequest))]
[JsonSerializable(typeof(RevokeRequest))]
[JsonSerializable(typeof(ChannelRequest))]
[JsonSerializable(typeof(EnrollmentTokenRequest))]
[JsonSerializable(typeof(ApiTokenRequest))]
[JsonSerializable(typeof(MoveMachineRequest))]
[JsonSerializable(typeof(PublisherKeyRequest))]
[JsonSerializable(typeof(ReleaseMetadataRequest))]
[JsonSerializable(typeof(TrustRootRequest))]
[JsonSerializable(typeof(TrustRootView))]
[JsonSerializable(typeof(ProblemDocument))]
public sealed partial class OperatorJson : JsonSerializerContext;
