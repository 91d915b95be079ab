"""A real MRML scene without Qt, built with ``slicer-core`` the way Slicer's application sets it up.

Follows ``trame_slicer/core/slicer_app.py`` (Kitware's trame-slicer): a scene, the application logic
with its colour nodes, the Colors, Volumes, Segmentations and Subject hierarchy module logics, the
default slice orientation presets and the three slice views (Red, Yellow, Green) with their slice
composite nodes, as the layout manager of the Slicer application creates them. Scene glue tested on
this scene runs on the same MRML classes as inside Slicer; only the Qt widgets are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import slicer

SLICE_VIEW_NAMES = ("Red", "Yellow", "Green")


@dataclass
class SlicerScene:
    """The scene and its logics. The application logic holds its module logics by weak reference:
    they live as long as this object."""

    scene: "slicer.vtkMRMLScene"
    app_logic: "slicer.vtkSlicerApplicationLogic"
    color_logic: "slicer.vtkMRMLColorLogic"
    volumes_logic: "slicer.vtkSlicerVolumesLogic"
    segmentations_logic: "slicer.vtkSlicerSegmentationsModuleLogic"
    subject_hierarchy_logic: "slicer.vtkSlicerSubjectHierarchyModuleLogic"
    slice_logics: list

    def load_volume(self, path: Path, name: str) -> "slicer.vtkMRMLScalarVolumeNode":
        """A scalar volume node read from ``path`` through the Volumes logic (storage node attached)."""
        node = self.volumes_logic.AddArchetypeVolume(str(path), name)
        if node is None:
            raise RuntimeError(f"{path}: Slicer's Volumes logic could not read it")
        # In Slicer the subject hierarchy plugin logic (Qt) gives every new data node an item.
        hierarchy = self.scene.GetSubjectHierarchyNode()
        hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
        return node


def build_scene() -> SlicerScene:
    """A fresh scene set up like the one of the Slicer application (see the module docstring)."""
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()

    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLApplicationLogic(app_logic)
    color_logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Colors", color_logic)

    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLApplicationLogic(app_logic)
    volumes_logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Volumes", volumes_logic)

    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    segmentations_logic.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Segmentations", segmentations_logic)

    subject_hierarchy_logic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy_logic.SetMRMLScene(scene)
    subject_hierarchy_logic.SetMRMLApplicationLogic(app_logic)

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    slice_logics = []
    for view_name in SLICE_VIEW_NAMES:
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_logic.AddSliceNode(view_name)
        slice_logics.append(slice_logic)

    return SlicerScene(scene, app_logic, color_logic, volumes_logic, segmentations_logic, subject_hierarchy_logic,
                       slice_logics)


def render_slice_view(app: SlicerScene, layout_name: str = "Red", size: tuple[int, int] = (256, 256)):
    """The composited slice of one view as Slicer blends it, as an RGBA array ``[y, x, 4]`` (row 0 at the top).

    The slice logic's pipeline reslices the background and foreground volumes of the view's slice
    composite node and blends them with the display nodes' colour tables, window/level, threshold
    transparency and the foreground opacity (DESIGN.md §5). Segmentations are drawn by displayable
    managers in a render window, which this does not include.
    """
    import numpy as np
    from vtk.util import numpy_support

    slice_logic = next(logic for logic in app.slice_logics if logic.GetSliceNode().GetLayoutName() == layout_name)
    producer = slice_logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    if (width, height) != tuple(size):
        raise RuntimeError(f"slice view {layout_name} is {width}x{height}, not {size}")
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return np.ascontiguousarray(rgba[::-1])  # VTK's row 0 is the bottom


def write_png(rgba, path: Path) -> None:
    """Write an RGBA array ``[y, x, 4]`` (row 0 at the top) as a PNG with VTK."""
    import numpy as np
    import vtk
    from vtk.util import numpy_support

    height, width, components = rgba.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(rgba[::-1]).reshape(-1, components), deep=True)
    image.GetPointData().SetScalars(scalars)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()


def render_slice_view_with_segmentations(app: SlicerScene, layout_name: str = "Red",
                                         size: tuple[int, int] = (256, 256)):
    """The slice view as Slicer draws it, segmentations included, as an RGB array ``[y, x, 3]`` (row 0 at the top).

    An offscreen render window (VTK's EGL window: no X server needed) shows the composited slice of
    :func:`render_slice_view` as an image actor, one screen pixel per slice pixel, and the Segmentations
    2D displayable manager draws every visible segment (fill and outline) over it, as in the slice
    views of the Slicer application.
    """
    import numpy as np
    import vtk
    from vtk.util import numpy_support

    width, height = size
    slice_logic = next(logic for logic in app.slice_logics if logic.GetSliceNode().GetLayoutName() == layout_name)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # displayable managers need one (they crash without)
    interactor.SetRenderWindow(window)
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputConnection(slice_logic.GetImageDataConnection())
    renderer.AddActor(actor)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app.app_logic)
    if not factory.IsDisplayableManagerRegistered("vtkMRMLSegmentationsDisplayableManager2D"):
        factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager2D")
    managers = factory.InstantiateDisplayableManagers(renderer)
    managers.SetMRMLDisplayableNode(slice_logic.GetSliceNode())
    camera = renderer.GetActiveCamera()  # slice XY coordinates = screen pixels, as in a Slicer slice view
    camera.ParallelProjectionOn()
    camera.SetFocalPoint((width - 1) / 2, (height - 1) / 2, 0.0)
    camera.SetPosition((width - 1) / 2, (height - 1) / 2, 1000.0)
    camera.SetViewUp(0.0, 1.0, 0.0)
    camera.SetParallelScale(height / 2)
    renderer.ResetCameraClippingRange()
    window.Render()
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.SetInputBufferTypeToRGB()
    grabber.Update()
    image = grabber.GetOutput()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    window.Finalize()
    return np.ascontiguousarray(rgb[::-1])
