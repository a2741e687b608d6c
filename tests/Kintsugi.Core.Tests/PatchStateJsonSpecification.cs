using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Core.Tests;

public sealed class PatchStateJsonSpecification
{
    [Theory]
    [InlineData(PatchState.AppliedWithBug, "\"applied-with-bug\"")]
    [InlineData(PatchState.NothingToApply, "\"nothing-to-apply\"")]
    [InlineData(PatchState.Applied, "\"applied\"")]
    public void Json_carries_the_wire_name(PatchState state, string json)
    {
        Assert.Equal(json, JsonSerializer.Serialize(state, StateJson.Default.PatchState));
        Assert.Equal(state, JsonSerializer.Deserialize(json, StateJson.Default.PatchState));
    }

    [Fact]
    public void Json_with_an_unknown_state_names_the_known_ones()
    {
        var e = Assert.Throws<FormatException>(() =>
            JsonSerializer.Deserialize("\"half-applied\"", StateJson.Default.PatchState));
        Assert.Contains("applied-with-bug", e.Message);
    }
}

[JsonSerializable(typeof(PatchState))]
internal sealed partial class StateJson : JsonSerializerContext;
