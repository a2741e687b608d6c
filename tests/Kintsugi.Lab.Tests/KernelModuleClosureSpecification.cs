using Kintsugi.Testing;

namespace Kintsugi.Lab.Tests;

/// <summary>Module dependency resolution over a real kernel package's modules.dep.</summary>
public sealed class KernelModuleClosureSpecification
{
    [Fact]
    public async Task Dependencies_come_before_the_modules_that_need_them()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var order = new KernelModuleClosure(kernel.Kernel.ModulesDirectory).Resolve(["virtio_net"])
            .Select(KernelModuleClosure.NameOf).ToList();
        Assert.Equal("virtio_net", order[^1]);
        Assert.True(order.IndexOf("failover") < order.IndexOf("net_failover"));
        Assert.Contains("virtio_ring", order);
    }

    [Fact]
    public async Task Built_in_modules_need_no_file()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud612);
        var closure = new KernelModuleClosure(kernel.Kernel.ModulesDirectory);
        Assert.True(closure.IsBuiltin("virtio_pci")); // built in on 6.12, a module on 6.1
        Assert.Empty(closure.Resolve(["virtio_pci"]));
    }

    [Fact]
    public async Task An_unknown_module_is_named_in_the_error()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var error = Assert.Throws<LabException>(() =>
            new KernelModuleClosure(kernel.Kernel.ModulesDirectory).Resolve(["no_such_module"]));
        Assert.Contains("no_such_module", error.Message);
    }
}
