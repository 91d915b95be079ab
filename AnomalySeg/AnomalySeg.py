"""AnomalySeg: find and outline abnormal tissue in brain MRI (SADM, Behrendt et al., MIDL 2024).

The module is GUI and scene glue only. The engine (``AnomalySegLib``) runs in a child process,
``PythonSlicer -m AnomalySegLib segment ... --progress-format json``, so the application never
freezes; its results are imported into the scene by ``AnomalySegModuleLib.SceneGlue``.
"""

# No "from __future__ import annotations": parameterNodeWrapper reads the annotations as types.
import enum
import importlib
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _makeEngineImportable() -> None:
    """Installed extension: ``AnomalySegLib`` sits beside this file. Source checkout (this folder
    added as an additional module path): it is one folder up."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "AnomalySegLib" / "__init__.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return


_makeEngineImportable()

from AnomalySegLib.progress import ProgressEvent  # noqa: E402
from AnomalySegLib.resources import resources_dir  # noqa: E402
from AnomalySegModuleLib import Findings, Models, SceneGlue  # noqa: E402
from AnomalySegModuleLib.Dependencies import installRequirements, missingRequirements  # noqa: E402
from AnomalySegModuleLib.InferenceProcess import InferenceProcess, engineEnvironment  # noqa: E402
from AnomalySegModuleLib.SegmentationRun import SegmentationRun  # noqa: E402

#: Application settings key of the model folders the user added. A user-level preference, not a
#: scene parameter: the folders are on this computer's disk and are offered in every scene.
MODEL_FOLDERS_SETTING = "AnomalySeg/modelFolders"
PROGRESS_POLL_MS = 200
#: The slider re-thresholds the segment this long after it stopped moving: one re-threshold per
#: gesture, not one per step (it blocks the main thread: see BENCHMARKS.md, slicer_rethreshold).
RETHRESHOLD_DELAY_MS = 300
#: Reloaded with the module in developer mode, dependencies first.
HELPER_MODULES = ("AnomalySegLib.progress", "AnomalySegModuleLib.Results", "AnomalySegModuleLib.Findings",
                  "AnomalySegModuleLib.Models", "AnomalySegModuleLib.Dependencies",
                  "AnomalySegModuleLib.InferenceProcess", "AnomalySegModuleLib.SceneGlue",
                  "AnomalySegModuleLib.SegmentationRun")


class Device(enum.Enum):
    """Values of ``--device``; the combo box shows :meth:`label` (parameterNodeWrapper's enum connector)."""

    AUTO = "auto"
    CUDA = "cuda"
    MPS = "mps"
    CPU = "cpu"

    def label(self) -> str:
        return {Device.AUTO: _("Auto (GPU if available)"), Device.CUDA: _("GPU (CUDA)"),
                Device.MPS: _("GPU (Apple MPS)"), Device.CPU: _("CPU")}[self]


#
# AnomalySeg
#


class AnomalySeg(ScriptedLoadableModule):
    """Module description for Slicer's module list (see ScriptedLoadableModule)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Anomaly Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["AnomalySeg developers"]
        self.parent.helpText = _(
            "Finds and outlines abnormal tissue (tumours, stroke lesions, MS lesions) in a T1-weighted brain "
            "MRI. A diffusion model trained on healthy brains reconstructs a pseudo-healthy image; a U-Net "
            "delineates what differs. Results: the reconstruction, an anomaly map shown over the input, and "
            "a segmentation with its volume and a table of findings. Not for clinical use. "
            '<a href="https://github.com/anomalyseg/AnomalySeg">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Method: Behrendt, Bhattacharya, Maack, Krüger, Opfer, Schlaefer. Combining Reconstruction-based "
            "Unsupervised Anomaly Detection with Supervised Segmentation for Brain MRIs. MIDL 2024, PMLR "
            "250:87-102. Module structure after Slicer's scripted module template, SlicerNNUNet and "
            "SlicerMONAIAuto3DSeg.")
        iconPath = resources_dir() / "Icons" / "AnomalySeg.png"
        if iconPath.is_file():  # in a source checkout Resources/ is not beside this file
            self.parent.icon = qt.QIcon(str(iconPath))


#
# AnomalySegParameterNode
#


@parameterNodeWrapper
class AnomalySegParameterNode:
    """Inputs, options and the last results of the module (saved with the scene).

    inputVolume, brainMask, device, importReconstruction, showIn3D - bound to their widgets
        (``SlicerParameterName`` in the .ui).
    model - bundle folder ("" = the engine's default); thresholdPreset - a preset of that bundle;
        outputFolder - "" = temporary files. Their widgets' items depend on the bundle and the
        user's folders, so the widget keeps these three in step itself.
    anomalyMap, anomalySegmentation, segmentId, threshold, qcWarnings, cleanUp - the last results, so
        that a reloaded scene can still be re-thresholded with the model's rule (cleanUp: JSON of the
        engine's clean-up, "" = none) and shows its warnings.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]
    model: str = ""
    device: Device = Device.AUTO
    thresholdPreset: str = "val"
    importReconstruction: bool = True
    showIn3D: bool = False
    outputFolder: str = ""
    anomalyMap: vtkMRMLScalarVolumeNode
    anomalySegmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    threshold: float = 0.0
    qcWarnings: list[str]
    cleanUp: str = ""


#
# AnomalySegWidget
#


class AnomalySegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, options, Apply/Cancel, progress, log, results and findings.

    Args:
        logic: the logic to drive (default: a new interactive :class:`AnomalySegLogic`); a test
            passes a fake one (see ``AnomalySegTest.test_WidgetWithFakeLogic``).
    """

    def __init__(self, parent=None, logic=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._parameterNode: Optional[AnomalySegParameterNode] = None
        self._parameterNodeGuiTag = None
        self._results: Optional[SceneGlue.ImportedResults] = None
        self._rethresholdTimer: Optional[qt.QTimer] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(str(resources_dir() / "UI" / "AnomalySeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        if self.logic is None:
            self.logic = AnomalySegLogic(interactive=True)
        self._populateModels()
        self.ui.progressBar.hide()
        self.ui.warningsLabel.hide()
        self.ui.findingsTable.setColumnCount(len(Findings.TABLE_COLUMNS))
        self.ui.findingsTable.setHorizontalHeaderLabels([_(header) for header, _key in Findings.TABLE_COLUMNS])
        self._rethresholdTimer = qt.QTimer()
        self._rethresholdTimer.setSingleShot(True)
        self._rethresholdTimer.setInterval(RETHRESHOLD_DELAY_MS)
        self._rethresholdTimer.connect("timeout()", self._rethreshold)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.addModelFolderButton.connect("clicked(bool)", self.onAddModelFolder)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.thresholdPresetComboBox.connect("currentIndexChanged(int)", self.onPresetChanged)
        self.ui.outputFolderSelector.connect("currentPathChanged(QString)", self.onOutputFolderChanged)
        self.ui.sensitivitySlider.connect("valueChanged(double)", self.onSensitivityChanged)
        self.ui.findingsTable.connect("cellClicked(int,int)", self.onFindingClicked)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic:
            self.logic.cancel()
        if self._rethresholdTimer:
            self._rethresholdTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer mode "Reload": reload the helper modules too, then this module."""
        for name in HELPER_MODULES:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._results = None
        self._showResults(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Optional[AnomalySegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
            self._showUnboundOptions()
            if self._results is None:  # a scene loaded with results: re-threshold them from the stored nodes
                try:
                    self._results = self.logic.resultsFromParameterNode(self._parameterNode)
                except ValueError as error:  # the scene lost a node or segment since
                    self._log(_("The results stored in this scene cannot be re-thresholded: ") + str(error))
                self._showResults(self._results)
            self._updateApplyButton()

    # --- options the parameter node cannot bind (items depend on the bundle and the user's folders) ---

    def _populateModels(self) -> None:
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("Engine default"), "")
        for folder in self.logic.modelFolders():
            combo.addItem(folder.name, str(folder))
            combo.setItemData(combo.count - 1, str(folder), qt.Qt.ToolTipRole)
        combo.blockSignals(wasBlocked)

    def _populatePresets(self) -> None:
        """The preset list of the selected bundle; a preset it lacks falls back to its first one."""
        combo, node = self.ui.thresholdPresetComboBox, self._parameterNode
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            presets = Models.presetThresholds(node.model)
        except ValueError as error:
            presets = {}
            self._log(str(error))
        for name, value in presets.items():
            combo.addItem(Models.presetLabel(name, value), name)
        combo.blockSignals(wasBlocked)
        if presets and node.thresholdPreset not in presets:
            node.thresholdPreset = next(iter(presets))
        _selectData(combo, node.thresholdPreset)

    def _showUnboundOptions(self) -> None:
        node = self._parameterNode
        wasBlocked = [w.blockSignals(True) for w in (self.ui.modelComboBox, self.ui.outputFolderSelector)]
        if self.ui.modelComboBox.findData(node.model) < 0 and node.model:  # a folder from another computer
            self.ui.modelComboBox.addItem(Path(node.model).name, node.model)
        _selectData(self.ui.modelComboBox, node.model)
        self.ui.outputFolderSelector.currentPath = node.outputFolder
        self.ui.modelComboBox.blockSignals(wasBlocked[0])
        self.ui.outputFolderSelector.blockSignals(wasBlocked[1])
        self._populatePresets()

    def onModelChanged(self, *_args) -> None:
        if self._parameterNode:
            self._parameterNode.model = self.ui.modelComboBox.currentData or ""
            self._populatePresets()

    def onPresetChanged(self, *_args) -> None:
        if self._parameterNode and self.ui.thresholdPresetComboBox.currentData:
            self._parameterNode.thresholdPreset = self.ui.thresholdPresetComboBox.currentData

    def onOutputFolderChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.outputFolder = path

    def onAddModelFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Model bundle folder"))
        if not folder:
            return
        self.logic.addModelFolder(Path(folder))
        self._populateModels()
        _selectData(self.ui.modelComboBox, str(Path(folder)))

    def _updateApplyButton(self, caller=None, event=None) -> None:
        if self.logic.isRunning():
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the running analysis.")
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Find abnormal tissue in the input volume.")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Select an input volume.")
            self.ui.applyButton.enabled = False

    # --- running ---

    def onApplyButton(self) -> None:
        if self.logic.isRunning():
            self.logic.cancel()
            self._log(_("Cancelled."))
            return
        node = self._parameterNode
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        with slicer.util.tryWithErrorDisplay(_("AnomalySeg could not start."), waitCursor=True):
            self.logic.process(
                node.inputVolume, brainMask=node.brainMask, model=node.model or None, device=node.device.value,
                threshold=node.thresholdPreset, importReconstruction=node.importReconstruction,
                showIn3D=node.showIn3D, outputFolder=node.outputFolder or None, waitForCompletion=False,
                onProgress=self._onProgress, onLog=self._log, onFinished=self._onFinished)
        if not self.logic.isRunning():  # it could not start
            self.ui.progressBar.hide()
        self._updateApplyButton()

    def _onProgress(self, event: ProgressEvent) -> None:
        if event.fraction is not None:
            self.ui.progressBar.value = int(round(100 * event.fraction))
        if event.event == "progress":
            self.ui.progressBar.format = f"{event.stage or ''} %p%"
        if event.message:
            self._log(f"[{event.event}] {event.message}")

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(text)

    def _onFinished(self, results: Optional[SceneGlue.ImportedResults], errorMessage: str) -> None:
        self.ui.progressBar.hide()
        self._updateApplyButton()
        if results is None:
            if errorMessage:
                self._log(errorMessage)
                slicer.util.errorDisplay(_("AnomalySeg failed: ") + errorMessage)
            return
        self._results = results
        self.logic.storeResults(self._parameterNode, results)
        self._showResults(results)

    # --- results ---

    def _showResults(self, results: Optional[SceneGlue.ImportedResults]) -> None:
        slider = self.ui.sensitivitySlider
        if results is None:
            slider.enabled = False
            self.ui.resultsLabel.text = _("No results yet.")
            self.ui.warningsLabel.hide()
            self.ui.findingsTable.setRowCount(0)
            return
        high = float(results.anomalyMapNode.GetImageData().GetScalarRange()[1])
        wasBlocked = slider.blockSignals(True)
        slider.maximum = max(high, results.statistics.threshold, 1e-3)
        slider.value = results.statistics.threshold
        slider.blockSignals(wasBlocked)
        slider.enabled = True
        self.ui.warningsLabel.text = "\n".join(_("Warning: ") + warning for warning in results.qcWarnings)
        self.ui.warningsLabel.visible = bool(results.qcWarnings)
        self._showStatistics(results)

    def _showStatistics(self, results: SceneGlue.ImportedResults) -> None:
        statistics = results.statistics
        text = _("Anomaly volume: {volume:.2f} ml in {count} finding(s) (score > {threshold:.3f})")
        self.ui.resultsLabel.text = text.format(volume=statistics.volumeMl, count=statistics.findings,
                                                threshold=statistics.threshold)
        table = self.ui.findingsTable
        rows = results.currentFindings
        table.setRowCount(len(rows))
        for rowIndex, row in enumerate(rows):
            for column, text in enumerate(row.cells()):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(rowIndex, column, item)

    def onSensitivityChanged(self, value: float) -> None:
        """The overlay follows the slider at once; the segment, statistics and findings are
        re-thresholded once it rests (see :data:`RETHRESHOLD_DELAY_MS`)."""
        if self._results is not None and not self.logic.isRunning():
            SceneGlue.showOverlayFloor(self._results.anomalyMapNode, value)
            self._rethresholdTimer.start()  # restarts while the slider moves

    def _rethreshold(self) -> None:
        if self._results is None or self.logic.isRunning():
            return
        value = float(self.ui.sensitivitySlider.value)
        with slicer.util.tryWithErrorDisplay(_("Re-thresholding failed."), waitCursor=True):
            self.logic.rethreshold(self._results, value)
            self._parameterNode.threshold = value
            self._showStatistics(self._results)

    def onFindingClicked(self, row: int, _column: int) -> None:
        findings = self._results.currentFindings if self._results else []
        if 0 <= row < len(findings):
            Findings.jumpSlicesTo(slicer.mrmlScene, findings[row].centroidRas)


def _selectData(comboBox, value: str) -> None:
    index = comboBox.findData(value)
    if index >= 0:
        comboBox.currentIndex = index


#
# AnomalySegLogic
#


class AnomalySegLogic(ScriptedLoadableModuleLogic):
    """Runs the engine on a volume node and imports its results; usable without the GUI.

    Python console or batch script::

        logic = AnomalySegLogic()
        results = logic.process(slicer.util.getNode("MRBrainTumor1"), device="auto")
        print(results.statistics.volumeMl, "ml")

    Args:
        interactive: may show dialogs (dependency installation). ``False`` (console, batch, tests)
            never shows one: missing packages raise an error naming them.
        processFactory: makes the object that runs the engine (default
            :class:`InferenceProcess`); tests and other front-ends can inject their own.
        pythonExecutable: the interpreter running the engine (default: ``PythonSlicer``).
    """

    def __init__(self, interactive: bool = False, processFactory: Callable[..., InferenceProcess] = InferenceProcess,
                 pythonExecutable: Optional[str] = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.interactive = interactive
        self.processFactory = processFactory
        self.pythonExecutable = pythonExecutable or shutil.which("PythonSlicer") or sys.executable
        self._run: Optional[SegmentationRun] = None
        self._timer: Optional[qt.QTimer] = None
        self._onFinished: Optional[Callable[[Optional[SceneGlue.ImportedResults], str], None]] = None

    def getParameterNode(self) -> AnomalySegParameterNode:
        return AnomalySegParameterNode(super().getParameterNode())

    # --- models ---

    def modelFolders(self) -> list[Path]:
        """Model bundles shipped in ``Resources/Models`` and the folders the user added."""
        added = Models.splitFolders(qt.QSettings().value(MODEL_FOLDERS_SETTING) or "")
        return Models.bundledModelFolders() + [folder for folder in added if folder not in Models.bundledModelFolders()]

    def addModelFolder(self, folder: Path) -> None:
        """Remember ``folder`` (a model bundle) in the application settings (a user preference)."""
        settings = qt.QSettings()
        known = Models.splitFolders(settings.value(MODEL_FOLDERS_SETTING) or "")
        if folder not in known:
            known.append(folder)
        settings.setValue(MODEL_FOLDERS_SETTING, Models.joinFolders(known))

    # --- dependencies ---

    def ensureDependencies(self) -> None:
        """Make sure the engine's packages are installed: ask and install when interactive, else raise."""
        missing = missingRequirements()
        if not missing:
            return
        if not self.interactive:
            raise RuntimeError(f"missing Python packages: {', '.join(missing)}; install them once with "
                               "AnomalySegLogic().installDependencies() or from the AnomalySeg module")
        if not installRequirements(missing, askConfirmation=True):
            raise RuntimeError("AnomalySeg needs these Python packages: " + ", ".join(missing))

    def installDependencies(self) -> None:
        """Install the missing engine packages without asking (console, batch mode, self-test)."""
        installRequirements(missingRequirements(), askConfirmation=False)

    # --- running ---

    def isRunning(self) -> bool:
        return self._run is not None and self._run.running

    def cancel(self) -> None:
        """Stop a running analysis and every process it started; nothing is imported."""
        if self._run is not None:
            self._run.cancel()

    def process(self, inputVolume: vtkMRMLScalarVolumeNode,
                brainMask: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, None] = None,
                model: Optional[str] = None, device: str = "auto", threshold: str = "val",
                importReconstruction: bool = True, showIn3D: bool = False, outputFolder: Optional[str] = None,
                waitForCompletion: bool = True,
                onProgress: Optional[Callable[[ProgressEvent], None]] = None,
                onLog: Optional[Callable[[str], None]] = None,
                onFinished: Optional[Callable[[Optional[SceneGlue.ImportedResults], str], None]] = None,
                ) -> Optional[SceneGlue.ImportedResults]:
        """Segment anomalies in ``inputVolume`` with ``anomalyseg segment`` and load the results.

        The volume (and mask) are written to temporary files, the engine runs in a child process
        (``--device``, ``--model``, ``--threshold`` as given) and its outputs are imported next to
        the input. With ``waitForCompletion`` the call blocks and returns the results (raising
        ``RuntimeError`` with the engine's message on failure); otherwise it returns at once and
        ``onFinished(results or None, errorMessage)`` is called later from the Qt event loop.
        ``outputFolder`` keeps the engine's files (default: temporary, removed after import).
        """
        if self.isRunning():
            raise RuntimeError("an analysis is running already; cancel it or wait for it")
        self.ensureDependencies()
        workFolder = Path(tempfile.mkdtemp(prefix="AnomalySeg-", dir=slicer.app.temporaryPath))
        try:
            run = SegmentationRun(
                inputVolume, workFolder, self.pythonExecutable, slicer.modules.volumes.logic(),
                slicer.modules.segmentations.logic(), brainMask=brainMask, model=model, device=device,
                threshold=threshold, importReconstruction=importReconstruction, showIn3D=showIn3D,
                outputFolder=Path(outputFolder) if outputFolder else None, onProgress=onProgress, onLog=onLog,
                processFactory=self.processFactory)
            run.start(engineEnvironment(slicer.util.startupEnvironment()))
        except Exception:
            shutil.rmtree(workFolder, ignore_errors=True)
            raise
        self._run = run
        if waitForCompletion:
            run.wait()
            results, error = run.finish()
            if results is None:
                raise RuntimeError(error or "cancelled")
            return results
        self._onFinished = onFinished
        self._timer = qt.QTimer()
        self._timer.setInterval(PROGRESS_POLL_MS)
        self._timer.connect("timeout()", self._onTimer)
        self._timer.start()
        return None

    def rethreshold(self, results: SceneGlue.ImportedResults, threshold: float) -> SceneGlue.AnomalyStatistics:
        """Re-threshold the stored anomaly map with the engine's rule (no network run); returns the new
        statistics (also stored in ``results.statistics``)."""
        statistics = SceneGlue.thresholdAnomalyMap(results.anomalyMapNode, results.segmentationNode,
                                                   results.segmentId, threshold, cleanUp=results.cleanUp)
        results.statistics = statistics
        return statistics

    @staticmethod
    def storeResults(parameterNode: AnomalySegParameterNode, results: SceneGlue.ImportedResults) -> None:
        """Keep what re-thresholding needs in the parameter node (saved with the scene)."""
        parameterNode.anomalyMap = results.anomalyMapNode
        parameterNode.anomalySegmentation = results.segmentationNode
        parameterNode.segmentId = results.segmentId
        parameterNode.threshold = results.statistics.threshold
        parameterNode.qcWarnings = list(results.qcWarnings)
        parameterNode.cleanUp = json.dumps(results.cleanUp.to_dict()) if results.cleanUp is not None else ""

    @staticmethod
    def resultsFromParameterNode(parameterNode: AnomalySegParameterNode) -> Optional[SceneGlue.ImportedResults]:
        """The results a saved scene holds (see :meth:`storeResults`), or ``None`` if it holds none."""
        node = parameterNode
        if not (node.inputVolume and node.anomalyMap and node.anomalySegmentation and node.segmentId):
            return None
        return SceneGlue.resultsFromNodes(node.inputVolume, node.anomalyMap, node.anomalySegmentation,
                                          node.segmentId, node.threshold, qcWarnings=list(node.qcWarnings),
                                          cleanUp=SceneGlue.cleanUpOf(json.loads(node.cleanUp)) if node.cleanUp else None)

    def _onTimer(self) -> None:
        if self._run.poll():
            return
        self._timer.stop()
        self._timer = None
        try:
            results, error = self._run.finish()
        except Exception as exception:  # import failed: report it to the GUI instead of the event loop
            logging.exception("AnomalySeg: importing results failed")
            results, error = None, str(exception)
        if self._onFinished:
            self._onFinished(results, error)


#
# AnomalySegTest
#


class AnomalySegTest(ScriptedLoadableModuleTest):
    """Runs the real pipeline on Slicer's MRBrainTumor1 sample (needs the engine's packages and a model).

    Run it from the Python console: ``slicer.util.selectModule("AnomalySeg")`` then the module's
    "Reload and Test" button (developer mode), or ``Slicer --no-main-window --python-code
    "import AnomalySeg; AnomalySeg.AnomalySegTest().runTest(); exit()"``; see docs/slicer.md.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WidgetWithFakeLogic()
        self.setUp()
        self.test_MRBrainTumor1()
        self.setUp()
        self.test_Cancel()

    def _tumourVolume(self):
        import SampleData

        self.delayDisplay("Loading MRBrainTumor1 (Slicer sample data)")
        return SampleData.downloadSample("MRBrainTumor1")

    def test_WidgetWithFakeLogic(self):
        """The panel against a fake logic (no engine run): options reach process() through the
        parameter node; results show their warnings and findings; a click on a finding centres
        the slice views; the slider moves the overlay at once and re-thresholds when it rests."""
        inputVolume = self._tumourVolume()
        logic = _FakeLogic()
        widget = AnomalySegWidget(logic=logic)
        widget.setup()
        widget.ui.inputSelector.setCurrentNode(inputVolume)
        widget.ui.deviceComboBox.currentIndex = list(Device).index(Device.CPU)
        parameterNode = logic.getParameterNode()
        self.assertEqual(parameterNode.device, Device.CPU)
        self.assertGreater(widget.ui.thresholdPresetComboBox.count, 0)  # the default bundle's presets

        widget.ui.applyButton.click()
        self.assertEqual(len(logic.calls), 1)
        volume, options = logic.calls[0]
        self.assertIs(volume, inputVolume)
        self.assertEqual(options["device"], "cpu")
        self.assertEqual(options["threshold"], parameterNode.thresholdPreset)
        self.assertEqual(widget.ui.applyButton.text, "Cancel")

        results = _fakeResults(inputVolume)
        logic.running = False
        widget._onFinished(results, "")
        self.assertEqual(widget.ui.applyButton.text, "Apply")
        self.assertTrue(widget.ui.warningsLabel.visible)
        self.assertIn("slices 6.5 mm thick", widget.ui.warningsLabel.text)
        self.assertEqual(widget.ui.findingsTable.rowCount, len(results.currentFindings))
        self.assertEqual(parameterNode.anomalyMap, results.anomalyMapNode)
        self.assertEqual(list(parameterNode.qcWarnings), results.qcWarnings)

        widget.onFindingClicked(0, 0)
        sliceToRas = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetSliceToRAS() \
            if slicer.app.layoutManager() else None
        if sliceToRas is not None:
            centre = results.currentFindings[0].centroidRas
            for row in range(3):
                self.assertAlmostEqual(sliceToRas.GetElement(row, 3), centre[row], places=3)

        widget.ui.sensitivitySlider.value = 0.5
        self.assertAlmostEqual(results.anomalyMapNode.GetDisplayNode().GetLowerThreshold(), 0.5)
        self.assertEqual(logic.rethresholds, [])  # not before the slider rests
        widget._rethreshold()
        self.assertEqual(logic.rethresholds, [0.5])
        widget.cleanup()
        self.delayDisplay("Widget against a fake logic: options, warnings, findings, jump and slider")

    def test_MRBrainTumor1(self):
        inputVolume = self._tumourVolume()
        logic = AnomalySegLogic()
        logic.installDependencies()
        self.delayDisplay("Running anomalyseg segment (minutes on a CPU)")
        events = []
        results = logic.process(inputVolume, device="auto", onProgress=events.append, waitForCompletion=True)

        self.assertEqual([e.event for e in events][0], "start")
        self.assertEqual(events[-1].event, "done")
        fractions = [e.fraction for e in events if e.fraction is not None]
        self.assertEqual(fractions, sorted(fractions))
        inputDimensions = inputVolume.GetImageData().GetDimensions()
        self.assertEqual(results.anomalyMapNode.GetImageData().GetDimensions(), inputDimensions)
        self.assertEqual(results.reconstructionNode.GetImageData().GetDimensions(), inputDimensions)
        segment = results.segmentationNode.GetSegmentation().GetSegment(results.segmentId)
        self.assertEqual(segment.GetName(), "Anomaly")
        self.assertIn("SCT^4147007^Mass", segment.GetTerminology())
        self.assertGreater(results.statistics.volumeMl, 0.0, "no anomaly found in a brain with a tumour")
        composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
        if slicer.app.layoutManager() is not None:  # with a main window there are slice views
            self.assertGreater(len(composites), 0)
        for composite in composites:
            self.assertEqual(composite.GetForegroundVolumeID(), results.anomalyMapNode.GetID())
            self.assertEqual(composite.GetBackgroundVolumeID(), inputVolume.GetID())

        highest = float(results.anomalyMapNode.GetImageData().GetScalarRange()[1])
        self.assertEqual(logic.rethreshold(results, highest).volumeMl, 0.0)
        self.delayDisplay("MRBrainTumor1: anomaly {:.1f} ml in {} finding(s)".format(
            results.statistics.volumeMl, results.statistics.findings))

    def test_Cancel(self):
        inputVolume = self._tumourVolume()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        finished = []
        logic = AnomalySegLogic()
        logic.process(inputVolume, device="cpu", waitForCompletion=False,
                      onFinished=lambda results, error: finished.append((results, error)))
        self.assertTrue(logic.isRunning())
        logic.cancel()
        self.assertFalse(logic.isRunning())
        while not finished:
            slicer.app.processEvents()
        self.assertEqual(finished, [(None, "")])
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Cancel stops the engine and imports nothing")


class _FakeLogic:
    """Stands in for :class:`AnomalySegLogic` in the widget test: records calls, runs no engine."""

    def __init__(self) -> None:
        self.calls = []
        self.rethresholds = []
        self.running = False
        self._real = AnomalySegLogic()

    def getParameterNode(self):
        return self._real.getParameterNode()

    def modelFolders(self):
        return Models.bundledModelFolders()

    def isRunning(self):
        return self.running

    def cancel(self):
        self.running = False

    def process(self, inputVolume, **options):
        self.calls.append((inputVolume, options))
        self.running = True

    def rethreshold(self, results, threshold):
        self.rethresholds.append(threshold)
        return results.statistics

    storeResults = staticmethod(AnomalySegLogic.storeResults)
    resultsFromParameterNode = staticmethod(AnomalySegLogic.resultsFromParameterNode)


def _fakeResults(inputVolume) -> SceneGlue.ImportedResults:
    """Results on ``inputVolume`` without an engine run: its intensities scaled to 0-1 as the anomaly map."""
    anomalyMap = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, inputVolume, "fake anomaly map")
    scores = slicer.util.arrayFromVolume(anomalyMap).astype("float32")
    slicer.util.updateVolumeFromArray(anomalyMap, scores / max(float(scores.max()), 1.0))
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fake anomaly")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("Anomaly")
    SceneGlue.showAnomalyMap(inputVolume, anomalyMap, 0.8)
    statistics = SceneGlue.thresholdAnomalyMap(anomalyMap, segmentation, segmentId, 0.8)
    return SceneGlue.ImportedResults(inputVolume, None, anomalyMap, segmentation, segmentId, statistics,
                                     qcWarnings=["slices 6.5 mm thick"],
                                     findingsTable=[Findings.FindingRow(1, 1.5, (10.0, 20.0, 30.0), 0.95)])
